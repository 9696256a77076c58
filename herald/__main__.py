from herald.cli import app

app()
