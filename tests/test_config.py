"""Configuration: every setting parsed and documented; production refuses weak secrets."""

import re
from pathlib import Path

import pytest

from shopapi.app import create_app
from shopapi.config import ROOT, ConfigError, Settings, setting, setting_names

pytestmark = pytest.mark.no_db

STRONG = "k" * 48


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
        "development",
        900,
        2592000,
        12,
    )
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
