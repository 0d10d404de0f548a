// Behaviour of the ranking task page (keyboard and, where needed, drag). Loaded on every page.
