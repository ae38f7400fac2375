"""msgspec Structs: request bodies (`*Create`, `*Update`), queries and public answers."""
