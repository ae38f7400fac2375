"""Issue 18 item 11, what a generated client and a live probe tripped on: the OpenAPI document
declares conditional reads (304, If-None-Match), response headers and the 500/503 answers;
list answers require next_cursor and query parameters are never nullable; validation messages
are plain sentences; names and emails refuse control characters; query integers are digits.

HEAD on every GET route and Location on every 201 are walked over the whole route table in
tests/security/test_api9_inventory_management.py.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Literal

import msgspec
import pytest

from shopapi.messages import enum_values, plain
from shopapi.ratelimits import is_exempt
from shopapi.schemas.patterns import SENTENCES
from tests.conftest import assert_problem

# what the routes of the catalog answer with an ETag (resources/conditional.py's respond)
CONDITIONAL_READS = {
    "/api/categories",
    "/api/categories/{category_id}",
    "/api/products",
    "/api/products/{product_id}",
    "/api/products/{product_id}/stock-movements",
    "/api/shipping-methods",
    "/api/shipping-methods/{method_id}",
}


@pytest.fixture()
def spec(client) -> dict[str, Any]:
    return client.simulate_get("/api/docs/openapi.json").json


def operations(spec: dict[str, Any]):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def header_names(response: dict[str, Any]) -> set[str]:
    return set(response.get("headers", {}))


def resolved(spec: dict[str, Any], header: dict[str, Any]) -> dict[str, Any]:
    ref = header.get("$ref")
    return spec["components"]["headers"][ref.rpartition("/")[2]] if ref else header


# ------------------------------------------------------------------ the OpenAPI document


def test_conditional_reads_declare_if_none_match_and_304_with_the_etag(spec):
    declared = set()
    for path, method, op in operations(spec):
        params = {p["name"] for p in op["parameters"] if p["in"] == "header"}
        if "If-None-Match" in params:
            declared.add(path)
            assert method == "get", path
            assert "ETag" in header_names(op["responses"]["304"]), path
            assert "content" not in op["responses"]["304"], path  # no body
            assert "ETag" in header_names(op["responses"]["200"]), path
        else:
            assert "304" not in op["responses"], path
    assert declared == CONDITIONAL_READS
    update = spec["paths"]["/api/products/{product_id}"]["put"]
    assert "If-Match" in {p["name"] for p in update["parameters"]}
    assert "412" in update["responses"] and "ETag" in header_names(update["responses"]["200"])


def test_every_answer_declares_x_request_id_and_limited_routes_their_ratelimit_headers(spec):
    for path, method, op in operations(spec):
        for status, response in op["responses"].items():
            names = header_names(response)
            where = f"{method} {path} {status}"
            assert "X-Request-ID" in names, where
            limited = {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}
            assert (limited <= names) == (not is_exempt(path)), where
            if status == "429":
                assert resolved(spec, response["headers"]["Retry-After"])["required"], where
    assert resolved(spec, {"$ref": "#/components/headers/X-Request-ID"})["required"] is True


def test_every_201_declares_location_and_order_placement_idempotent_replayed(spec):
    created = []
    for path, method, op in operations(spec):
        if "201" in op["responses"]:
            created.append((method, path))
            assert "Location" in header_names(op["responses"]["201"]), path
        replays = "Idempotent-Replayed" in header_names(op["responses"].get("201", {}))
        keyed = "Idempotency-Key" in {p["name"] for p in op["parameters"]}
        assert replays == keyed, path
    assert ("post", "/api/auth/register") in created and ("post", "/api/cart/checkout") in created
    assert resolved(spec, {"$ref": "#/components/headers/Location"})["required"] is True


def test_every_operation_documents_500_and_503_with_the_problem_schema(spec):
    problem = {"$ref": "#/components/schemas/Problem"}
    for path, method, op in operations(spec):
        for status in ("500", "503"):
            response = op["responses"][status]
            content = response["content"]
            if path == "/readyz" and status == "503":  # the same readiness report, unready
                assert content["application/json"]["schema"]["$ref"].endswith("/Readiness")
                continue
            assert content["application/problem+json"]["schema"] == problem, (method, path)
    assert "internal_error" in spec["paths"]["/healthz"]["get"]["responses"]["500"]["description"]


def test_list_answers_require_next_cursor_and_allow_null(spec):
    lists = {
        name: schema
        for name, schema in spec["components"]["schemas"].items()
        if {"items", "next_cursor"} <= set(schema.get("properties", {}))
    }
    assert len(lists) >= 8, sorted(lists)
    for name, schema in lists.items():
        assert "next_cursor" in schema["required"], name
        kinds = {m.get("type") for m in schema["properties"]["next_cursor"]["anyOf"]}
        assert kinds == {"string", "null"}, name


def test_query_parameters_are_never_typed_nullable(spec):
    seen = 0
    for path, method, op in operations(spec):
        for param in op["parameters"]:
            if param["in"] != "query":
                continue
            seen += 1
            assert "null" not in repr(param["schema"]), (path, param)
            assert "anyOf" not in param["schema"], (path, param)
    assert seen > 20
    products = spec["paths"]["/api/products"]["get"]["parameters"]
    page = next(p for p in products if p["name"] == "page")
    assert page["schema"]["type"] == "integer" and page["schema"]["minimum"] == 1
    assert page["required"] is False
    # nor are the query Structs components: a generated client would model them, null and all
    assert [name for name in spec["components"]["schemas"] if name.endswith("Query")] == []


def test_every_pattern_in_the_document_has_a_plain_sentence(spec):
    patterns = set(re.findall(r'"pattern": ?"((?:[^"\\]|\\.)*)"', repr(spec).replace("'", '"')))
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str) and node.get("type") == "string":
                found.append(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec["components"]["schemas"])
    walk(spec["paths"])
    assert found, patterns
    assert [p for p in found if p not in SENTENCES and not p.startswith("^[0-9]")] == []


# ------------------------------------------------------------------ plain messages


def errors_of(response, status: int = 422) -> list[dict[str, str]]:
    body = assert_problem(response, status, "validation_error")
    for error in body["errors"]:
        assert "`" not in error["message"] and "regex" not in error["message"], error
        assert not error["message"].startswith("Expected"), error
    return body["errors"]


def test_body_validation_messages_are_plain_sentences(client, admin):
    register = "/api/auth/register"
    cases = [
        ({"email": "a@b.co", "password": 12}, "password", "must be a string"),
        ({"email": "not-an-email", "password": "password123"}, "email", None),
        ({"email": "a@b.co", "password": "short"}, "password", None),
        ({"email": "a@b.co", "password": "password123", "full_name": "x" * 201}, "full_name", None),
        ({"password": "password123"}, "email", "is required"),
    ]
    expected = {
        "email": "must be a valid email address",
        "password": "must be at least 8 characters long",
        "full_name": "must be at most 200 characters long",
    }
    for body, field, message in cases:
        (error,) = errors_of(client.simulate_post(register, json=body))
        assert error == {"field": field, "message": message or expected[field]}, body

    product = {"name": "Pen", "price_cents": -1, "category_id": 1}
    (error,) = errors_of(client.simulate_post("/api/products", json=product, headers=admin.headers))
    assert error == {"field": "price_cents", "message": "must be at least 0"}
    product = {"name": "Pen", "price_cents": 10, "category_id": 1, "image_url": 5}
    (error,) = errors_of(client.simulate_post("/api/products", json=product, headers=admin.headers))
    assert error == {"field": "image_url", "message": "must be a string"}
    product["image_url"] = "ftp://example.com/pen.png"
    (error,) = errors_of(client.simulate_post("/api/products", json=product, headers=admin.headers))
    assert error == {"field": "image_url", "message": "must be an absolute http or https URL"}

    order = {"items": [{"product_id": 1, "quantity": 0}]}
    (error,) = errors_of(client.simulate_post("/api/orders", json=order, headers=admin.headers))
    assert error == {"field": "items[0].quantity", "message": "must be at least 1"}
    (error,) = errors_of(
        client.simulate_post("/api/orders", json={"items": []}, headers=admin.headers)
    )
    assert error == {"field": "items", "message": "must have at least 1 item"}
    (error,) = errors_of(
        client.simulate_put("/api/orders/1/status", json={"status": "lost"}, headers=admin.headers)
    )
    assert error == {
        "field": "status",
        "message": "must be one of cancelled, delivered, paid, pending, shipped",
    }
    address = {"full_name": "A", "line1": "B", "city": "C", "postal_code": "D", "country": "XX"}
    (error,) = errors_of(
        client.simulate_post("/api/me/addresses", json=address, headers=admin.headers)
    )
    # 249 codes are for the schema's enum, not for a message
    assert error == {"field": "country", "message": "is not one of the allowed values"}
    address.update(country="GB", phone="call me")
    (error,) = errors_of(
        client.simulate_post("/api/me/addresses", json=address, headers=admin.headers)
    )
    assert error == {"field": "phone", "message": "may contain only digits, spaces and + - ( )"}


def test_query_validation_messages_are_plain_sentences(client, admin):
    cases = [
        ("/api/products", {"per_page": "500"}, "per_page", "must be at most 100"),
        ("/api/products", {"sort": "price"}, "sort", None),
        # msgspec's lax conversion reads "null" as None for an optional enum: no silent default
        ("/api/products", {"sort": "null"}, "sort", None),
        ("/api/users", {"role": "null"}, "role", "must be one of ADMIN, CUSTOMER, EDITOR"),
        ("/api/orders", {"status": "null"}, "status", None),
        ("/api/users", {"role": "KING"}, "role", "must be one of ADMIN, CUSTOMER, EDITOR"),
        (
            "/api/products",
            {"include_inactive": "maybe"},
            "include_inactive",
            "must be true or false",
        ),
        (
            "/api/products",
            {"cursor": "not a cursor!"},
            "cursor",
            "is not a cursor this server issued",
        ),
    ]
    for path, params, field, message in cases:
        response = client.simulate_get(path, params=params, headers=admin.headers)
        (error,) = errors_of(response)
        assert error["field"] == field, (path, params)
        if message:
            assert error["message"] == message, (path, params)
        else:
            assert error["message"].startswith("must be one of "), (path, params)


def test_messages_msgspec_may_raise_elsewhere_read_plainly_too():
    assert plain("Expected `float` > 0.0") == "must be greater than 0"
    assert plain("Expected `int` < 5") == "must be less than 5"
    assert plain("Expected `int` that's a multiple of 2") == "must be a multiple of 2"
    assert plain("Expected `object` of length <= 3") == "must have at most 3 entries"
    assert plain("Expected `array` of length >= 2") == "must have at least 2 items"
    assert plain("Expected `str` of length >= 1") == "must not be empty"
    assert plain("Expected `str` of length <= 1") == "must be at most 1 character long"
    assert plain("Expected `int | str`, got `null`") == "must be an integer or a string"
    assert plain("Expected `str` matching regex '^z+$'") == "has an invalid format"
    assert plain("Invalid enum value 'x'") == "is not one of the allowed values"
    # our own messages (and any msgspec does not phrase as above) pass through
    assert plain("must be a signed 64-bit integer") == "must be a signed 64-bit integer"


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Line(msgspec.Struct):
    colour: Colour
    size: Literal["S", "M"] | None = None


class Body(msgspec.Struct):
    lines: list[Line]
    note: str = ""


def test_enum_values_are_found_along_the_field_path():
    assert enum_values(Body, "lines[3].colour") == ("red", "blue")
    assert enum_values(Body, "lines[0].size") == ("M", "S")
    assert enum_values(Body, "note") is None
    assert enum_values(Body, "lines.colour") is None  # a list is indexed, not named
    assert enum_values(Body, "note[0]") is None
    assert enum_values(Body, "nothing") is None
    assert plain("Expected `str` matching regex [broken") == "has an invalid format"


# ------------------------------------------------------------------ control characters

# C0 and C1 controls, DEL, line/paragraph separators, bidi overrides and isolates
HOSTILE = ["\x01", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u202e", "\u2066", "\u2069"]


@pytest.mark.parametrize("char", HOSTILE, ids=lambda c: f"U+{ord(c):04X}")
def test_registration_refuses_control_characters_in_email_and_name(client, char):
    email = {"email": f"eve{char}@example.com", "password": "password123"}
    assert errors_of(client.simulate_post("/api/auth/register", json=email)) == [
        {"field": "email", "message": "must be a valid email address"}
    ]
    named = {"email": "eve@example.com", "password": "password123", "full_name": f"Eve{char}x"}
    (error,) = errors_of(client.simulate_post("/api/auth/register", json=named))
    assert error == {
        "field": "full_name",
        "message": "must not contain control characters or line breaks",
    }


@pytest.mark.parametrize("char", HOSTILE, ids=lambda c: f"U+{ord(c):04X}")
def test_profile_and_admin_updates_refuse_control_characters(client, make_user, admin, char):
    user = make_user()
    for caller in (user, admin):  # the user's own profile, and an admin editing it
        url = f"/api/users/{user.id}"
        (error,) = errors_of(
            client.simulate_patch(url, json={"full_name": f"A{char}B"}, headers=caller.headers)
        )
        assert error["field"] == "full_name"
        body = {"email": f"x{char}@example.com", "current_password": user.password}
        (error,) = errors_of(client.simulate_patch(url, json=body, headers=caller.headers))
        assert error["field"] == "email"


@pytest.mark.parametrize("char", HOSTILE, ids=lambda c: f"U+{ord(c):04X}")
def test_catalog_shipping_and_address_names_refuse_control_characters(
    client, admin, make_category, make_product, char
):
    category, product = make_category("Pens"), make_product()
    name = f"Ink {char}Blue"
    calls = [
        ("post", "/api/categories", {"name": name}),
        ("patch", f"/api/categories/{category['id']}", {"name": name}),
        ("post", "/api/products", {"name": name, "price_cents": 1, "category_id": category["id"]}),
        ("patch", f"/api/products/{product['id']}", {"name": name}),
        ("post", "/api/shipping-methods", {"name": name, "price_cents": 1}),
        (
            "post",
            "/api/me/addresses",
            {
                "full_name": name,
                "line1": "1 Road",
                "city": "X",
                "postal_code": "1",
                "country": "GB",
            },
        ),
    ]
    for method, url, body in calls:
        response = client.simulate_request(method.upper(), url, json=body, headers=admin.headers)
        (error,) = errors_of(response)
        assert error["field"] in ("name", "full_name"), (url, error)
        assert "control characters" in error["message"], (url, error)


def test_names_in_any_script_with_emoji_and_joiners_are_still_welcome(client, admin, make_category):
    name = "Zoë Ångström 山田 👩\u200d💻"
    registered = client.simulate_post(
        "/api/auth/register",
        json={"email": "zoë@exämple.com", "password": "password123", "full_name": name},
    )
    assert registered.status_code == 201, registered.text
    assert registered.json["full_name"] == name
    category = client.simulate_post(
        "/api/categories", json={"name": "  " + name + " "}, headers=admin.headers
    )
    assert category.status_code == 201 and category.json["name"] == name


# ------------------------------------------------------------------ integers in query strings


@pytest.mark.parametrize("value", ["1e1", "+5", " 5", "5 ", "٣", "５", "5.0", "0x10", "1_0", ""])
def test_integer_query_parameters_are_ascii_digits_only(client, value):
    for name in ("page", "per_page", "min_price_cents", "category_id"):
        response = client.simulate_get("/api/products", params={name: value})
        assert errors_of(response) == [
            {"field": name, "message": "must be an integer (ASCII digits only)"}
        ], (name, value)


def test_a_minus_sign_is_read_and_the_field_range_judges_it(client, admin):
    # ids are signed 64-bit everywhere (a path id may be -1 too): no such category, no product
    listed = client.simulate_get("/api/products", params={"category_id": "-1"})
    assert listed.status_code == 200 and listed.json["items"] == []
    orders = client.simulate_get("/api/orders", params={"user_id": "-1"}, headers=admin.headers)
    assert orders.status_code == 200
    for name, message in (
        ("page", "must be at least 1"),
        ("min_price_cents", "must be at least 0"),
    ):
        response = client.simulate_get("/api/products", params={name: "-1"})
        assert errors_of(response) == [{"field": name, "message": message}]
    for value in ("-", "--1", "-+1", "- 1"):
        (error,) = errors_of(client.simulate_get("/api/products", params={"page": value}))
        assert error["message"] == "must be an integer (ASCII digits only)", value
    response = client.simulate_get("/api/products", params={"page": "2", "per_page": "07"})
    assert response.status_code == 200 and response.json["per_page"] == 7
    # far longer than any bound: refused by the range, never a 500 from int()'s digit limit
    (error,) = errors_of(client.simulate_get("/api/products", params={"page": "9" * 5000}))
    assert error["field"] == "page"
