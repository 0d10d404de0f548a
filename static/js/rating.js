// Behaviour of the rating task page (keyboard and, where needed, drag). Loaded on every page.
