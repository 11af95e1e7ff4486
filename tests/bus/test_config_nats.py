"""``[nats]`` login settings: the file, ``TOCSIN_NATS_*`` filling what it leaves out,
validation errors that name the key (and the variable it came from), and secrets that
never show: not in ``repr``, not in an error message, not in the config digest."""

from __future__ import annotations

from pathlib import Path

import nkeys
import pytest

from tests.natsauth import Operator, new_seed
from tocsin import cli
from tocsin.bus.connection import connect_options
from tocsin.config import load, load_nats_login
from tocsin.core.errors import ConfigError
from tocsin.observability.redact import Secret


def write(tmp_path: Path, text: str, name: str = "tocsin.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Real files for the path settings: a seed, a .creds file, PEM-named files."""
    seed = tmp_path / "user.nk"
    seed.write_text(new_seed(nkeys.PREFIX_BYTE_USER).decode() + "\n")
    made = {"seed": seed, "creds": Operator().creds(tmp_path / "user.creds")}
    for name in ("ca", "cert", "key"):
        made[name] = write(tmp_path, "not used here\n", f"{name}.pem")
    return made


def test_nothing_configured_logs_in_as_nobody() -> None:
    login = load_nats_login(None, {})
    assert login.method == "none"
    assert not login.tls
    assert connect_options(login) == {}


def test_the_file_sets_the_login_and_the_environment_fills_the_rest(tmp_path: Path) -> None:
    file = write(tmp_path, '[nats]\nuser = "tocsin"\nack_wait = "45s"\n')
    env = {"TOCSIN_NATS_PASSWORD": "from-env", "TOCSIN_NATS_USER": "ignored"}
    login = load(file, env).nats_login
    assert (login.user, login.password) == ("tocsin", Secret("from-env"))
    assert load(file, env).nats.ack_wait == 45
    assert connect_options(login) == {"user": "tocsin", "password": "from-env"}


def test_no_config_file_takes_every_setting_from_the_environment(
    files: dict[str, Path],
) -> None:
    env = {
        "TOCSIN_NATS_CREDS": str(files["creds"]),
        "TOCSIN_NATS_TLS_CA": str(files["ca"]),
        "TOCSIN_NATS_TLS_VERIFY_HOSTNAME": "no",
    }
    login = load(None, env).nats_login
    assert login.method == "creds"
    assert login.creds == files["creds"]
    assert login.tls_ca == files["ca"]
    assert login.tls_verify_hostname is False


def test_expanded_variables_and_file_paths(tmp_path: Path, files: dict[str, Path]) -> None:
    file = write(tmp_path, '[nats]\nnkey_seed = "${SEED_FILE}"\n')
    login = load_nats_login(file, {"SEED_FILE": str(files["seed"])})
    assert login.method == "nkey"
    assert connect_options(login) == {"nkeys_seed": str(files["seed"])}


def test_an_empty_default_counts_as_not_set(tmp_path: Path) -> None:
    file = write(tmp_path, '[nats]\ntoken = "${NATS_TOKEN:-}"\n')
    assert load_nats_login(file, {}).method == "none"
    assert load_nats_login(file, {"TOCSIN_NATS_TOKEN": "t1"}).token == Secret("t1")


@pytest.mark.parametrize(
    ("table", "env", "message"),
    [
        (
            'user = "tocsin"\npassword = "pw"\ntoken = "tk"',
            {},
            "nats.token: not with nats.user; choose one way to authenticate",
        ),
        (
            'user = "tocsin"\npassword = "pw"',
            {"TOCSIN_NATS_TOKEN": "tk"},
            "nats.token (TOCSIN_NATS_TOKEN): not with nats.user;",
        ),
        ('user = "tocsin"', {}, "nats.password: required with nats.user"),
        ("", {"TOCSIN_NATS_PASSWORD": "pw"}, "nats.user: required with nats.password"),
        ('creds = "/nonexistent/tocsin.creds"', {}, "nats.creds: no such file"),
        (
            "",
            {"TOCSIN_NATS_NKEY_SEED": "/nonexistent/user.nk"},
            "nats.nkey_seed (TOCSIN_NATS_NKEY_SEED): no such file",
        ),
        ('tls_ca = "/nonexistent/ca.pem"', {}, "nats.tls_ca: no such file"),
        (
            "tls_verify_hostname = 1",
            {},
            "nats.tls_verify_hostname: Expected `bool | null`, got `int`",
        ),
        (
            "",
            {"TOCSIN_NATS_TLS_VERIFY_HOSTNAME": "maybe"},
            "nats.tls_verify_hostname (TOCSIN_NATS_TLS_VERIFY_HOSTNAME): expected true or false",
        ),
        ("password = 5", {}, "nats.password: Expected `str`"),
        ('tokn = "x"', {}, "nats.tokn: unknown key"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, table: str, env: dict[str, str], message: str
) -> None:
    file = write(tmp_path, f"[nats]\n{table}\n")
    with pytest.raises(ConfigError) as refused:
        load_nats_login(file, env)
    assert message in str(refused.value)
    with pytest.raises(ConfigError, match=r"^nats\."):  # the whole config says the same
        load(file, env)
    for secret in ("pw", "tk"):
        assert f"'{secret}'" not in str(refused.value)
        assert f"= {secret}" not in str(refused.value)


def test_a_certificate_needs_its_key_and_the_key_its_certificate(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    cert_only = write(tmp_path, f'[nats]\ntls_cert = "{files["cert"]}"\n')
    with pytest.raises(ConfigError, match=r"^nats\.tls_key: required with nats\.tls_cert$"):
        load_nats_login(cert_only, {})
    key_only = {"TOCSIN_NATS_TLS_KEY": str(files["key"])}
    with pytest.raises(
        ConfigError, match=r"^nats\.tls_cert: required with nats\.tls_key \(TOCSIN_NATS_TLS_KEY\)$"
    ):
        load_nats_login(None, key_only)


def test_seed_and_creds_files_are_checked_for_what_they_hold(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    # nats-py would read a .creds file without a JWT forever; refuse it up front.
    for key, source in (("nkey_seed", files["creds"]), ("creds", files["seed"])):
        with pytest.raises(ConfigError, match=f"^nats.{key}: .* (holds no NKey seed|is not a)"):
            load_nats_login(write(tmp_path, f'[nats]\n{key} = "{source}"\n'), {})


def test_a_pem_that_is_not_one_is_a_config_error(files: dict[str, Path]) -> None:
    login = load_nats_login(None, {"TOCSIN_NATS_TLS_CA": str(files["ca"])})
    with pytest.raises(ConfigError, match=r"^nats\.tls_ca: not a PEM CA certificate"):
        connect_options(login)


def test_secrets_never_print(tmp_path: Path) -> None:
    file = write(tmp_path, '[nats]\nuser = "tocsin"\npassword = "hunter2-secret"\n')
    config = load(file, {})
    for shown in (repr(config), str(config.nats), f"{config.nats_login.password}", config.digest()):
        assert "hunter2-secret" not in shown
    assert repr(Secret("x")) == "Secret('***')"
    assert config.nats_login.password is not None
    assert config.nats_login.password.reveal() == "hunter2-secret"


def test_one_shot_commands_read_only_the_nats_section(tmp_path: Path) -> None:
    """``tocsin publish`` needs the login, not the receivers: a receiver's unset variable
    does not stop it, while the whole config would."""
    file = write(
        tmp_path,
        '[nats]\ntoken = "tk"\n\n[receivers.hook]\nchannel = "webhook"\nurl = "${HOOK_URL}"\n',
    )
    assert load_nats_login(file, {}).method == "token"
    with pytest.raises(ConfigError, match="HOOK_URL"):
        load(file, {})


def test_cli_exits_2_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOCSIN_NATS_USER", "tocsin")
    monkeypatch.setenv("TOCSIN_NATS_PASSWORD", "pw-not-shown")
    monkeypatch.setenv("TOCSIN_NATS_TOKEN", "tk-not-shown")
    monkeypatch.delenv("TOCSIN_CONFIG", raising=False)
    argv = ["publish", "--nats-url", "nats://127.0.0.1:1", "--data-dir", str(tmp_path)]
    code = cli.main([*argv, "--type", "t", "--severity", "info", "--summary", "s"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert "nats.token (TOCSIN_NATS_TOKEN): not with nats.user (TOCSIN_NATS_USER)" in err
    assert "not-shown" not in err
