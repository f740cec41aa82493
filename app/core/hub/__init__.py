"""The Hugging Face Hub: its metadata (client), which file of a repo to take (choice), the
resumable download, and `siesta pull` (a download that ends in a recipe)."""
