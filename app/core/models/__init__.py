"""One model's life: its process (backend) with its log and leases, the state table it moves
through (lifecycle), the object that owns it (model), the llama-server arguments it is started
with, and the reaper that makes sure no server outlives Siesta."""
