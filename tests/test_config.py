"""Configuration: every setting parsed and documented; production refuses weak secrets, and
nothing signs with a built-in key (issue 18, item 2: a random key only for an explicit
development/test run)."""

import re
from pathlib import Path

import pytest

from shopapi.app import create_app
from shopapi.config import ROOT, ConfigError, Settings, setting, setting_names

pytestmark = pytest.mark.no_db

STRONG = "k" * 48
OLD_DEV_SECRET = "dev-secret-key-change-me-in-production-please"  # noqa: S105 - refused now


def prod_env(**extra):
    env = {
        "APP_ENV": "production",
        "DATABASE_URL": "postgresql://db/x",
        "REDIS_URL": "redis://r/0",
        "SECRET_KEY": STRONG,
        "SMTP_URL": "smtp://mail.internal:587",
    }
    env.update(extra)
    return env


def test_defaults_match_the_contract():
    s = Settings.from_env(env={})
    assert (s.app_env, s.access_token_ttl, s.refresh_token_ttl, s.bcrypt_rounds) == (
        None,
        900,
        2592000,
        12,
    )
    assert (s.jwt_issuer, s.jwt_audience, s.jwt_leeway) == ("shopapi", "shopapi-api", 10)
    assert (s.rate_limit_default, s.rate_limit_login, s.rate_limit_register) == (
        "300/minute",
        "10/minute",
        "30/hour",
    )
    assert (s.cache_ttl, s.trusted_proxies, s.db_pool_min, s.db_pool_max) == (300, 0, 1, 10)
    assert s.currency == "USD" and s.cors_origins == () and s.rate_limit_enabled


def test_production_starts_with_a_strong_secret():
    assert Settings.from_env(env=prod_env()).is_production


@pytest.mark.parametrize(
    "secret",
    [None, "", "short-secret", "change-me", "dev-secret-key-change-me-in-production-please"],
)
def test_production_refuses_missing_short_or_known_secret(secret):
    env = prod_env()
    if secret is None:
        del env["SECRET_KEY"]
    else:
        env["SECRET_KEY"] = secret
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env(env=env)


# ------------------------------------------------------------------ no built-in signing key


def test_there_is_no_built_in_key_any_more():
    from shopapi import config

    assert not hasattr(config, "DEV_SECRET")
    sources = "".join(path.read_text() for path in (ROOT / "shopapi").rglob("*.py"))
    # the old constant survives only in the list of refused example keys
    assert sources.count(OLD_DEV_SECRET) == 1
    assert f'"{OLD_DEV_SECRET}",' in (ROOT / "shopapi" / "config.py").read_text()


def test_without_app_env_and_secret_key_nothing_may_sign():
    """Tools that sign nothing (migrate, seed) still read their settings; a server or worker
    asks for the key at start and gets the reason it must refuse."""
    s = Settings.from_env(env={"DATABASE_URL": "postgresql://db/x"})
    assert s.secret_key is None and not s.is_production
    with pytest.raises(ConfigError, match="SECRET_KEY and APP_ENV are both unset") as refused:
        s.signing_key  # noqa: B018
    assert "APP_ENV=development" in str(refused.value) and "token_urlsafe" in str(refused.value)


@pytest.mark.parametrize("app_env", ["development", "test"])
def test_an_explicit_development_or_test_run_signs_with_a_random_key(app_env):
    first = Settings.from_env(env={"APP_ENV": app_env}).signing_key
    second = Settings.from_env(env={"APP_ENV": app_env, "SECRET_KEY": ""}).signing_key
    assert first != second and len(first) >= 32 and len(second) >= 32
    assert OLD_DEV_SECRET not in (first, second)


def test_a_configured_key_is_the_signing_key_in_every_environment():
    for env in ({}, {"APP_ENV": "development"}, {"APP_ENV": "test"}):
        assert Settings.from_env(env={**env, "SECRET_KEY": STRONG}).signing_key == STRONG


@pytest.mark.parametrize("app_env", [None, "development", "test"])
@pytest.mark.parametrize("secret", [OLD_DEV_SECRET, "change-me", "secret"])
def test_a_published_example_key_is_refused_in_every_environment(app_env, secret):
    env = {"SECRET_KEY": secret, **({"APP_ENV": app_env} if app_env else {})}
    with pytest.raises(ConfigError, match="published"):
        Settings.from_env(env=env)


def test_a_short_key_is_refused_unless_development_or_test_is_explicit():
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        Settings.from_env(env={"SECRET_KEY": "short-but-not-known"})
    for app_env in ("development", "test"):
        env = {"APP_ENV": app_env, "SECRET_KEY": "short-but-not-known"}
        assert Settings.from_env(env=env).signing_key == "short-but-not-known"


def test_share_signing_key_puts_one_random_key_in_the_environment(tmp_path, monkeypatch):
    """What gunicorn's master runs before it forks: the workers inherit the key it made."""
    from shopapi import config

    monkeypatch.setattr(config, "ROOT", tmp_path)  # no .env of the checkout
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("APP_ENV", "test")
    settings = config.share_signing_key()
    key = config.os.environ["SECRET_KEY"]
    assert key == settings.signing_key and len(key) >= 32
    # a worker's own reading finds that key, and a second call (a reload) keeps it
    assert Settings.from_env().signing_key == key
    assert config.share_signing_key().signing_key == key

    monkeypatch.delenv("SECRET_KEY")
    monkeypatch.delenv("APP_ENV")
    with pytest.raises(ConfigError, match="SECRET_KEY and APP_ENV are both unset"):
        config.share_signing_key()
    assert "SECRET_KEY" not in config.os.environ
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(ConfigError, match="production needs one"):
        config.share_signing_key()
    assert "SECRET_KEY" not in config.os.environ


def test_bin_dev_keeps_one_key_under_data(tmp_path, monkeypatch):
    from shopapi import devservices

    monkeypatch.setattr(devservices, "ROOT", tmp_path)
    for name in ("APP_ENV", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    env = devservices.dev_environment()
    stored = tmp_path / ".data" / "secret_key"
    assert env == {"APP_ENV": "development", "SECRET_KEY": stored.read_text().strip()}
    assert len(env["SECRET_KEY"]) >= 32 and stored.stat().st_mode & 0o777 == 0o600
    assert devservices.dev_environment() == env  # a restart keeps the key (and the logins)
    assert Settings.from_env(env=env).signing_key == env["SECRET_KEY"]
    # a configured key or environment wins
    monkeypatch.setenv("SECRET_KEY", STRONG)
    assert devservices.dev_environment() == {"APP_ENV": "development"}
    monkeypatch.delenv("SECRET_KEY")
    monkeypatch.setenv("APP_ENV", "production")
    assert devservices.dev_environment() == {"APP_ENV": "production"}
    # a cut key file is replaced, not used
    stored.write_text("short\n")
    assert len(devservices.dev_secret_key()) >= 32


def test_a_development_worker_signs_with_the_dev_servers_key(tmp_path, monkeypatch):
    """`shopapi worker` beside `shopapi dev`, neither with a SECRET_KEY: the worker takes the
    key kept under .data/, so the links it mails verify on the server (a random key of its
    own made every link it sent invalid)."""
    from shopapi import devservices

    monkeypatch.setattr(devservices, "ROOT", tmp_path)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("APP_ENV", "development")
    server_key = devservices.dev_environment()["SECRET_KEY"]
    assert devservices.worker_environment() == {"SECRET_KEY": server_key}
    # a configured key, a test run, or no APP_ENV at all (refused later): nothing added
    for app_env, secret in (("development", STRONG), ("test", ""), ("", "")):
        monkeypatch.setenv("APP_ENV", app_env)
        monkeypatch.setenv("SECRET_KEY", secret)
        assert devservices.worker_environment() == {}


def test_production_requires_database_and_redis_urls():
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Settings.from_env(env=prod_env(DATABASE_URL=""))


@pytest.mark.parametrize(
    "name,value",
    [
        ("APP_ENV", "staging"),
        ("BCRYPT_ROUNDS", "3"),
        ("ACCESS_TOKEN_TTL", "ten"),
        ("RATE_LIMIT_ENABLED", "maybe"),
        ("CURRENCY", "dollars"),
        ("DB_POOL_MAX", "0"),
        ("JWT_LEEWAY", "301"),
        ("JWT_LEEWAY", "-1"),
    ],
)
def test_invalid_values_refuse_to_start(name, value):
    with pytest.raises(ConfigError):
        Settings.from_env(env={name: value})


def test_csv_and_bool_settings_parse():
    s = Settings.from_env(
        env={"CORS_ORIGINS": "https://a.example, https://b.example,", "RATE_LIMIT_ENABLED": "off"}
    )
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.rate_limit_enabled is False


def test_env_example_lists_every_setting_with_its_default():
    text = (ROOT / ".env.example").read_text()
    declared = dict(re.findall(r"^([A-Z_]+)=(.*)$", text, re.M))
    assert set(declared) == set(setting_names())
    for name, value in declared.items():
        spec = setting(name)
        if value:  # an example value must be the default, parsed the same way
            assert spec.parse(value) == spec.parse(spec.default), name
        else:
            assert spec.default in (None, ""), name


def test_readme_configuration_table_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.M))
    # the app's settings, and besides them only what gunicorn.conf.py reads (its own table)
    assert documented - _gunicorn_variables() == set(setting_names())


def _gunicorn_variables() -> set[str]:
    conf = (ROOT / "gunicorn.conf.py").read_text()
    return set(re.findall(r"(?:environ(?:\.get)?\(|environ\[|_int_env\()[\"']([A-Z_]+)[\"']", conf))


def test_production_app_hides_the_docs(async_redis, settings, pool, redis_client):
    from falcon import testing

    prod = Settings.from_env(
        env=prod_env(
            DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url, LOG_LEVEL="WARNING"
        )
    )
    client = testing.TestClient(create_app(prod, pool=pool, redis=async_redis))
    assert client.simulate_get("/api/docs/openapi.json").status_code == 404
    assert client.simulate_get("/api/docs/swagger-ui/").status_code == 404
    assert client.simulate_get("/healthz").status_code == 200


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch):
    from shopapi import config

    (tmp_path / ".env").write_text("CACHE_TTL=42\n")
    monkeypatch.setattr(config, "ROOT", tmp_path)
    monkeypatch.delenv("CACHE_TTL", raising=False)
    assert config.Settings.from_env().cache_ttl == 42


def test_every_gunicorn_variable_is_documented():
    read = _gunicorn_variables()
    assert {"WEB_CONCURRENCY", "GUNICORN_WORKER_CLASS", "PORT"} <= read
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in read:
        assert re.search(rf"^#?{name}=", example, re.M), f"{name} missing from .env.example"
        assert f"`{name}`" in readme, f"{name} missing from the README"
