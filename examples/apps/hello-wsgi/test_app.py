"""The installed dependency loads and the app answers (no server needed)."""
import app

out = []
body = b"".join(app.app({"QUERY_STRING": "name=test"}, lambda status, headers: out.append(status)))
assert out == ["200 OK"], out
assert body == b"hello, test (hello-greeting 1.0.0)\n", body
print("1 test passed")
