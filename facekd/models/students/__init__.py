"""Student networks; each module registers itself in :data:`facekd.models.STUDENTS`."""
