// Behaviour of the chat task page (keyboard and, where needed, drag). Loaded on every page.
