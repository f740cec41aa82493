"""The files on disk and the vocabulary they are written in: recipes, settings, comment-keeping
TOML edits, atomic writes, the recipe folder's watcher, Siesta's paths, durations, sizes,
memory limits, endpoints and the clock. Imports no other core package."""
