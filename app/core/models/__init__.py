"""One model's life: its process (backend) with its log and leases, the state table it moves
through (lifecycle), the object that owns it (model), the llama-server arguments it is started
with, and what makes sure no server outlives Siesta: the OS's process layer (processes/: a
process group, or a Windows job object, per server) and the watchdog (reaper)."""
