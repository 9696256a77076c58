"""docs/operations.md stays true to the code: its settings table is `herald settings`, verbatim."""

from typer.testing import CliRunner

from herald.cli import app
from tests.deploy.manifests import ROOT


def test_the_configuration_reference_is_the_one_the_code_prints() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    documented = guide.split("<!-- settings:begin -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    printed = CliRunner().invoke(app, ["settings"]).output
    assert documented.strip() == printed.strip(), "run `herald settings` and paste it into docs/operations.md"

