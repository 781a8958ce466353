def member_projects(user) -> list[dict]:
    """The projects ``user`` belongs to, for ``GET /me/`` (filled in by the governance work)."""
    return []
