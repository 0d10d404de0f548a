// Behaviour of the demonstration task page (keyboard and, where needed, drag). Loaded on every page.
