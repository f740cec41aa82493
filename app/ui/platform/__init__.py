"""The app's edges on the desktop: start at login, one instance at a time, hand-offs to the
desktop (open a file, pick a folder), and the shell protocol the tray and windows call. Unlike
the rest of the UI it writes its own files (the login entry, the instance socket)."""
