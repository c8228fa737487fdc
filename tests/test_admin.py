"""Admin commands: packages cap accounts, shared addresses refused, one account per address."""
import json

import pytest


@pytest.fixture
def admin(desk):
    desk.cli("org", "add", "ACME", "--package", "bronze", "--main-contact", "alice@acme.example")
    return desk


def test_fourth_account_on_bronze_is_refused_with_a_clear_message(admin):
    admin.cli("account", "add", "bert@acme.example", "--org", "ACME")
    admin.cli("account", "add", "cleo@acme.example", "--org", "ACME")
    admin.cli("account", "add", "dora@acme.example", "--org", "ACME", expect=1)
    assert "reached the limit of its bronze package (3 accounts)" in admin.last_stderr
    assert len(admin.json("account", "list", "--org", "ACME")) == 3


def test_removed_account_frees_a_seat(admin):
    admin.cli("account", "add", "bert@acme.example", "--org", "ACME")
    admin.cli("account", "add", "cleo@acme.example", "--org", "ACME")
    admin.cli("account", "remove", "bert@acme.example")
    admin.cli("account", "add", "dora@acme.example", "--org", "ACME")
    active = [a["email"] for a in admin.json("account", "list") if a["active"]]
    assert active == ["alice@acme.example", "cleo@acme.example", "dora@acme.example"]


def test_downgrade_below_active_accounts_is_refused(admin):
    admin.cli("account", "add", "bert@acme.example", "--org", "ACME")
    admin.cli("org", "package", "ACME", "basic", expect=1)
    assert "has 2 active accounts and basic allows 1" in admin.last_stderr
    assert admin.json("org", "list")[0]["package"] == "bronze"
    admin.cli("account", "remove", "bert@acme.example")
    admin.cli("org", "package", "ACME", "basic")
    assert admin.json("org", "list")[0]["package"] == "basic"


@pytest.mark.parametrize("address", ["info@acme.example", "Support@acme.example", "team+x@acme.example",
                                     "kontakt@acme.example", "office@acme.example"])
def test_shared_role_addresses_cannot_be_registered(admin, address):
    admin.cli("account", "add", address, "--org", "ACME", expect=1)
    assert "shared address" in admin.last_stderr


def test_address_marked_shared_cannot_be_registered(admin):
    admin.cli("account", "mark-shared", "it-dept@acme.example")
    admin.cli("account", "add", "IT-Dept@ACME.example", "--org", "ACME", expect=1)
    assert "shared address" in admin.last_stderr


def test_address_belongs_to_at_most_one_account_case_insensitively(admin):
    admin.cli("org", "add", "Globex", "--package", "gold", "--main-contact", "bob@globex.example")
    admin.cli("account", "add", "ALICE@Acme.Example", "--org", "Globex", expect=1)
    assert "already belongs to an account of ACME" in admin.last_stderr


def test_org_add_refuses_shared_main_contact_and_writes_nothing(admin):
    admin.cli("org", "add", "Initech", "--package", "gold", "--main-contact", "info@initech.example", expect=1)
    assert [o["name"] for o in admin.json("org", "list")] == ["ACME"]


def test_unknown_organisation_and_package_are_clear_errors(admin):
    admin.cli("account", "add", "x@y.example", "--org", "Nope", expect=1)
    assert "unknown organisation: 'Nope'" in admin.last_stderr
    admin.cli("org", "add", "Y", "--package", "platinum", "--main-contact", "y@y.example", expect=1)
    assert "unknown package 'platinum'" in admin.last_stderr


def test_csv_import_is_all_or_nothing(admin, tmp_path):
    admin.cli("org", "package", "ACME", "gold")
    good = tmp_path / "people.csv"
    good.write_text("email,name,locale\nbert@acme.example,Bert Berg,de\ncleo@acme.example;x\n", encoding="utf-8")
    good.write_text("email,name,locale\nbert@acme.example,Bert Berg,de\ncleo@acme.example,Cleo,en\n")
    imported = admin.json("account", "import", str(good), "--org", "ACME")
    assert [(a["email"], a["name"], a["locale"]) for a in imported] == [
        ("bert@acme.example", "Bert Berg", "de"), ("cleo@acme.example", "Cleo", "en")]
    bad = tmp_path / "bad.csv"
    bad.write_text("dora@acme.example,Dora\ninfo@acme.example,Shared\n")
    admin.cli("account", "import", str(bad), "--org", "ACME", expect=1)
    assert "line 2" in admin.last_stderr and "nothing was imported" in admin.last_stderr
    assert "dora@acme.example" not in [a["email"] for a in admin.json("account", "list")]


def test_csv_import_respects_the_cap(admin, tmp_path):
    rows = tmp_path / "many.csv"
    rows.write_text("".join(f"p{i}@acme.example,P {i}\n" for i in range(3)))
    admin.cli("account", "import", str(rows), "--org", "ACME", expect=1)
    assert "limit" in admin.last_stderr
    assert len(admin.json("account", "list")) == 1


def test_agent_cannot_be_an_account(admin):
    admin.cli("agent", "add", "sam@vendor.example")
    admin.cli("account", "add", "sam@vendor.example", "--org", "ACME", expect=1)
    assert "agent" in admin.last_stderr


def test_json_listing_is_one_document(admin):
    out = admin.cli("ticket", "list", "--json")
    assert json.loads(out) == []
