"""The client: futures, submission, gathering, and the sync facade."""
