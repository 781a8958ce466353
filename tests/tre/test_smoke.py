def test_me_requires_auth(anon):
    assert anon.get("/api/v1/me/").status_code == 401


def test_me(make_user, client_for):
    user = make_user("carol", role="dac", organisation="Org X")
    body = client_for(user).get("/api/v1/me/").json()
    assert body["username"] == "carol" and body["roles"] == ["dac"] and body["organisation_name"] == "Org X"
