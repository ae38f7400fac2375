"""Categories: public reads, staff writes, slugs, unique names, delete guard, bad input."""

import pytest

from shopapi.services.categories import next_slug, slugify
from tests.conftest import assert_problem, db_rows


def count_categories(database_url) -> int:
    return db_rows(database_url, "SELECT count(*) FROM categories")[0][0]


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Books", "books"),
        ("  Garden   Tools ", "garden-tools"),
        ("Café Crème & Co.", "cafe-creme-co"),
        ("Men's Shoes", "mens-shoes"),
        ("Rock-n-Roll / Vinyl", "rock-n-roll-vinyl"),
        ("Ÿoga Äpparel", "yoga-apparel"),
        ("日本", "category"),
    ],
)
@pytest.mark.no_db
def test_slugify_keeps_lower_case_ascii_words(name, slug):
    assert slugify(name) == slug


@pytest.mark.no_db
def test_next_slug_counts_up_from_two():
    assert next_slug("books", set()) == "books"
    assert next_slug("books", {"books"}) == "books-2"
    assert next_slug("books", {"books", "books-2", "books-7"}) == "books-8"
    assert next_slug("books", {"books-2"}) == "books"


def test_staff_creates_a_category_with_a_slug(client, editor, database_url):
    response = client.simulate_post(
        "/api/categories",
        headers=editor.headers,
        json={"name": "  Café Crème ", "description": "Hot drinks"},
    )
    assert response.status_code == 201, response.text
    body = response.json
    assert set(body) == {"id", "name", "slug", "description", "created_at", "updated_at"}
    assert body["name"] == "Café Crème"
    assert body["slug"] == "cafe-creme"
    assert body["description"] == "Hot drinks"
    assert body["created_at"].endswith("Z") and len(body["created_at"]) == 27
    assert response.headers["etag"].startswith('"')
    assert db_rows(database_url, "SELECT name, slug FROM categories") == [
        ("Café Crème", "cafe-creme")
    ]


def test_clashing_slugs_get_numbered_suffixes(client, admin):
    slugs = []
    for name in ("Books", "Books!", "books?", "BOOKS."):
        response = client.simulate_post(
            "/api/categories", headers=admin.headers, json={"name": name}
        )
        if response.status_code == 201:
            slugs.append(response.json["slug"])
    # "Books!" etc. differ in name, so each is created; all share the base slug
    assert slugs == ["books", "books-2", "books-3", "books-4"]


def test_slug_stays_stable_on_rename(client, admin):
    created = client.simulate_post(
        "/api/categories", headers=admin.headers, json={"name": "Toys"}
    ).json
    renamed = client.simulate_put(
        f"/api/categories/{created['id']}", headers=admin.headers, json={"name": "Games and Toys"}
    )
    assert renamed.status_code == 200
    assert renamed.json["name"] == "Games and Toys"
    assert renamed.json["slug"] == "toys"
    assert renamed.json["description"] == ""


def test_duplicate_name_in_other_case_returns_409_name_taken(client, admin, database_url):
    client.simulate_post("/api/categories", headers=admin.headers, json={"name": "Books"})
    response = client.simulate_post(
        "/api/categories", headers=admin.headers, json={"name": "BOOKS"}
    )
    assert_problem(response, 409, "name_taken")
    assert count_categories(database_url) == 1


def test_rename_onto_an_existing_name_returns_409_and_keeps_the_name(
    client, admin, make_category, database_url
):
    make_category("Books")
    music = make_category("Music")
    response = client.simulate_patch(
        f"/api/categories/{music['id']}", headers=admin.headers, json={"name": "books"}
    )
    assert_problem(response, 409, "name_taken")
    assert db_rows(database_url, "SELECT name FROM categories WHERE id = %s", (music["id"],)) == [
        ("Music",)
    ]


def test_put_and_patch_are_the_same_partial_update(client, editor, make_category):
    category = make_category("Garden", description="Outdoor")
    patched = client.simulate_patch(
        f"/api/categories/{category['id']}",
        headers=editor.headers,
        json={"description": "Plants and tools"},
    )
    assert patched.status_code == 200
    assert patched.json["name"] == "Garden"
    assert patched.json["description"] == "Plants and tools"
    put = client.simulate_put(
        f"/api/categories/{category['id']}", headers=editor.headers, json={"name": "Garden Centre"}
    )
    assert put.json["description"] == "Plants and tools"
    assert put.json["name"] == "Garden Centre"


@pytest.mark.parametrize("role", ["CUSTOMER", None])
def test_category_writes_need_admin_or_editor(client, make_user, make_category, role, database_url):
    category = make_category("Books")
    headers = make_user(role).headers if role else {}
    status, code = (403, "forbidden") if role else (401, "not_authenticated")
    assert_problem(
        client.simulate_post("/api/categories", headers=headers, json={"name": "New"}), status, code
    )
    assert_problem(
        client.simulate_put(
            f"/api/categories/{category['id']}", headers=headers, json={"name": "Renamed"}
        ),
        status,
        code,
    )
    assert_problem(
        client.simulate_delete(f"/api/categories/{category['id']}", headers=headers), status, code
    )
    assert db_rows(database_url, "SELECT name FROM categories") == [("Books",)]


def test_anyone_lists_and_reads_categories(client, make_category):
    books = make_category("Books", description="Paper")
    make_category("Music")
    listed = client.simulate_get("/api/categories")
    assert listed.status_code == 200
    assert listed.json["total"] == 2
    assert listed.json["page"] == 1 and listed.json["per_page"] == 20
    assert listed.json["next_cursor"] is None
    assert [c["name"] for c in listed.json["items"]] == ["Books", "Music"]
    item = client.simulate_get(f"/api/categories/{books['id']}")
    assert item.status_code == 200
    assert item.json == listed.json["items"][0]


def test_category_list_filters_by_case_insensitive_substring(client, make_category):
    for name in ("Children's Books", "eBooks", "Music", "100% Cotton"):
        make_category(name)
    found = client.simulate_get("/api/categories", params={"q": "BOOK"}).json
    assert [c["name"] for c in found["items"]] == ["Children's Books", "eBooks"]
    assert found["total"] == 2
    # LIKE wildcards in q are literal characters
    assert client.simulate_get("/api/categories", params={"q": "%"}).json["total"] == 1
    assert client.simulate_get("/api/categories", params={"q": "_"}).json["total"] == 0


def test_category_list_pages_and_page_past_the_end(client, make_category):
    for i in range(5):
        make_category(f"Category {i}")
    second = client.simulate_get("/api/categories", params={"page": 2, "per_page": 2}).json
    assert [c["name"] for c in second["items"]] == ["Category 2", "Category 3"]
    assert second["total"] == 5 and second["next_cursor"] is None
    past = client.simulate_get("/api/categories", params={"page": 9, "per_page": 2}).json
    assert past["items"] == [] and past["total"] == 5 and past["page"] == 9


def test_unknown_category_returns_404(client):
    assert_problem(client.simulate_get("/api/categories/999"), 404, "not_found")


def test_non_integer_category_id_returns_422(client):
    assert_problem(client.simulate_get("/api/categories/abc"), 422, "validation_error")
    assert_problem(client.simulate_get(f"/api/categories/{2**63}"), 422, "validation_error")


def test_delete_of_an_empty_category_returns_204(client, admin, make_category, database_url):
    category = make_category("Old")
    response = client.simulate_delete(f"/api/categories/{category['id']}", headers=admin.headers)
    assert response.status_code == 204
    assert response.text == ""
    assert count_categories(database_url) == 0
    assert_problem(client.simulate_get(f"/api/categories/{category['id']}"), 404, "not_found")


def test_delete_of_a_category_with_products_returns_409_category_in_use(
    client, admin, make_category, make_product, database_url
):
    category = make_category("Busy")
    make_product(category_id=category["id"], is_active=False)
    response = client.simulate_delete(f"/api/categories/{category['id']}", headers=admin.headers)
    assert_problem(response, 409, "category_in_use")
    assert count_categories(database_url) == 1


def test_delete_of_an_unknown_category_returns_404(client, admin):
    assert_problem(
        client.simulate_delete("/api/categories/42", headers=admin.headers), 404, "not_found"
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "Nul\u0000byte"},
        {"name": 12},
        {"name": "Fine", "description": "d" * 5001},
        {"name": "Fine", "description": "nul \u0000"},
    ],
    ids=[
        "missing-name",
        "empty",
        "blank",
        "too-long",
        "nul",
        "not-a-string",
        "long-description",
        "nul-description",
    ],
)
def test_invalid_category_bodies_return_422_and_write_nothing(client, admin, body, database_url):
    response = client.simulate_post("/api/categories", headers=admin.headers, json=body)
    assert_problem(response, 422, "validation_error")
    assert response.json["errors"]
    assert count_categories(database_url) == 0


def test_category_name_of_100_characters_is_accepted(client, admin):
    response = client.simulate_post(
        "/api/categories", headers=admin.headers, json={"name": "é" * 100}
    )
    assert response.status_code == 201
    assert response.json["slug"] == "e" * 100


@pytest.mark.parametrize(
    "params", [{"per_page": 10000}, {"page": 0}, {"q": "a\u0000"}, {"q": "x" * 201}]
)
def test_bad_category_list_parameters_return_422(client, params):
    assert_problem(client.simulate_get("/api/categories", params=params), 422, "validation_error")


def test_trailing_slash_reaches_the_same_route(client, make_category):
    make_category("Books")
    assert client.simulate_get("/api/categories/").json["total"] == 1
