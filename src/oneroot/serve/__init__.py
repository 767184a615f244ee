"""The asyncio edges of `oneroot serve`: sockets, timers and processes around the pure cores."""
