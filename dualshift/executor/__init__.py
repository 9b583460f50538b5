"""The migration executor: phases run on a real PostgreSQL with persisted state."""
