"""Platform: the database and migrations, partitions, metrics, start-up checks and the supervisor."""
