"""Memory: what each model holds (book), what the GPUs have (gpus), pressure on RAM (pressure),
how each OS tells all of it (readers: one module per OS, chosen once), what a model will need
before it loads (gguf_estimate, fit), which loads may go ahead (admission) and which idle
model goes when memory runs short (relief)."""
