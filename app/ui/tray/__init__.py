"""The system-tray icon and its menu: the menu, its model entries, and the watch that knows
when the menu is open."""
