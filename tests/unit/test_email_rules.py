"""Email rules without I/O: the plain-text alternative made from HTML, and signed unsubscribe tokens."""

from services.dispatcher import domain


def test_the_text_of_an_html_email_reads_like_the_email() -> None:
    html = """<html><head><title>T</title><style>p { color: red }</style><script>x()</script></head><body>
    <h1>Hello&nbsp;Ada</h1><p>Your   order
    shipped.<br>Track it <a href="https://t.example/1">here</a>.</p>
    <table><tr><td>Kite</td><td>€12</td></tr></table>
    <ol><li>One</li><li>Two</li></ol><img src="x.png" alt="Logo"> <a href="https://a.example">https://a.example</a>
    </body></html>"""
    assert domain.html_to_text(html) == (
        "Hello Ada\n\nYour order shipped.\nTrack it here (https://t.example/1).\n\nKite €12\n\n- One\n- Two\n\n"
        "Logo https://a.example\n"
    )


def test_an_unsubscribe_token_verifies_only_unaltered_and_under_its_key() -> None:
    key = b"x" * 32
    token = domain.unsubscribe_token(key, "ws_1", "send-1", "user 1", "email")
    assert domain.read_unsubscribe_token(key, token) == {"w": "ws_1", "s": "send-1", "u": "user 1", "c": "email"}
    claims, mac = token.split(".")
    other = domain.unsubscribe_token(key, "ws_2", "send-1", "user 1", "email").split(".")[0]
    assert domain.read_unsubscribe_token(key, f"{other}.{mac}") is None  # claims swapped
    assert domain.read_unsubscribe_token(b"y" * 32, token) is None
    assert domain.read_unsubscribe_token(key, claims) is None
    assert domain.read_unsubscribe_token(key, "") is None
