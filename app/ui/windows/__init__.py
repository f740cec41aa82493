"""Windows that stay open beside the tray: the Models window, its Try it panel, and the log viewer."""
