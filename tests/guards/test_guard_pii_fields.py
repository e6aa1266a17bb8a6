"""Personal fields of tool results pseudonymised by declaration (tools.yaml `pii_fields`, policies/pii_fields.py),
through the real policy files and the real tool-output guard: names the NER tier misses never stay raw."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from interlock.graphs.nodes import guards
from interlock.policies import POLICY_DIR
from interlock.policies.loader import PolicyError, get_policies, load_policies
from interlock.policies.pii import TOKEN_RE, PiiVault
from interlock.policies.pii_fields import pseudonymise_fields
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage


@pytest.fixture(scope="module", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERLOCK_HOME", str(tmp_path_factory.mktemp("pii-fields-home")))
        yield


# Shaped like the sample CRM's bulk `find_customer` (mcp_servers/crm.py), names from its generator.
CUSTOMERS = {"customers": [
    {"customer_id": "CUS-101", "name": "Omar Okafor", "email": "omar.okafor1@acme.example",
     "phone": "+1-555-101-4821", "company": "Acme Corp", "tier": "gold"},
    {"customer_id": "CUS-102", "name": "Sara Nguyen", "email": "sara.nguyen2@acme.example",
     "phone": "+1-555-102-7735", "company": "Acme Corp", "tier": "standard"},
    {"customer_id": "CUS-103", "name": "Kenji Lindqvist", "email": "kenji.lindqvist3@acme.example",
     "phone": "+1-555-103-2210", "company": "Acme Corp", "tier": "platinum"},
    {"customer_id": "CUS-104", "name": "Zoe Haddad", "email": "zoe.haddad4@acme.example",
     "phone": "+1-555-104-9001", "company": "Acme Corp", "tier": "gold"},
]}
PERSONAL = [v for c in CUSTOMERS["customers"] for k, v in c.items() if k in ("name", "email", "phone")]
# Tokens of those values, also in their name parts (a first or last name alone is still the person).
PARTS = [p for c in CUSTOMERS["customers"] for p in c["name"].split()]


def guard(state: dict[str, Any], message: Any) -> dict[str, Any]:
    state = {**state, "messages": [*state.get("messages", []), message]}
    fn = guards.scan_input if isinstance(message, HumanMessage) else guards.scan_tool_outputs
    out = fn(state)
    rewritten = {getattr(m, "id", None) or getattr(m, "tool_call_id", ""): m for m in out.get("messages") or []}
    state["messages"] = [rewritten.get(getattr(m, "id", None) or getattr(m, "tool_call_id", ""), m)
                         for m in state["messages"]]
    if "pii_vault" in out:
        state["pii_vault"] = out["pii_vault"]
    return state


def result(name: str, value: Any, call_id: str = "c1", artifact: bool = True) -> ToolMessage:
    return ToolMessage(content=json.dumps(value), artifact=value if artifact else None, tool_call_id=call_id,
                       name=name)


def dump(state: dict[str, Any]) -> str:
    """Everything state holds, as a client or a checkpoint would see it.

    The vault's values must be Fernet ciphertext; they are then left out of the text searched, because random
    base64 holds a short name like "Zoe" by chance (about one run in 200 did)."""
    vault = json.loads(json.dumps(state.get("pii_vault") or {}))
    for entry in (vault.get("entries") or {}).values():
        assert str(entry["value"]).startswith("gAAAAA"), "a vault value is not Fernet ciphertext"
        entry["value"] = "<ciphertext>"
    return json.dumps([m.model_dump() for m in state["messages"]], default=str) + json.dumps(vault)


@pytest.mark.parametrize("artifact", [True, False], ids=["artifact", "text-only"])
def test_a_bulk_read_holds_no_raw_name_email_or_phone_of_any_customer(artifact: bool) -> None:
    state = guard({"messages": [SystemMessage("You are the support assistant.", id="s")]},
                  result("find_customer", CUSTOMERS, artifact=artifact))
    seen = dump(state)
    leaked = [v for v in PERSONAL + PARTS if v in seen]
    assert leaked == []
    message = state["messages"][-1]
    rows = (message.artifact if artifact else json.loads(message.content))["customers"]
    vault = PiiVault.from_state(state["pii_vault"])
    for row, original in zip(rows, CUSTOMERS["customers"], strict=True):
        for field, entity in (("name", "PERSON"), ("email", "EMAIL_ADDRESS"), ("phone", "PHONE_NUMBER")):
            entry = vault.entries[row[field]]  # the whole value is one pseudonym
            assert (entry.value, entry.entity, entry.trusted) == (original[field], entity, False)
        # Fields not declared and not personal stay readable (ids drive the next call).
        assert (row["customer_id"], row["company"], row["tier"]) == (original["customer_id"], "Acme Corp",
                                                                     original["tier"])
    assert json.loads(message.content)["customers"] == rows


def test_the_requesting_users_own_value_keeps_its_trusted_pseudonym() -> None:
    state = guard({"messages": []}, HumanMessage("My email is omar.okafor1@acme.example, what is on file?", id="u"))
    mine = next(t for t, e in PiiVault.from_state(state["pii_vault"]).entries.items()
                if e.value == "omar.okafor1@acme.example")
    state = guard(state, result("get_customer", CUSTOMERS["customers"][0]))
    row = state["messages"][-1].artifact
    vault = PiiVault.from_state(state["pii_vault"])
    assert row["email"] == mine and vault.entries[mine].trusted
    assert not vault.entries[row["name"]].trusted and vault.entries[row["name"]].value == "Omar Okafor"


def test_the_bound_customers_own_record_is_the_users_own_and_other_customers_stay_third_parties() -> None:
    state = guard({"messages": [], "principal": {"sub": "u-omar", "tenant": "acme", "customer_id": "CUS-101"},
                   "tenant": "acme"}, HumanMessage("Open a ticket with my contact details", id="u"))
    state = guard(state, result("find_customer", CUSTOMERS))
    rows = state["messages"][-1].artifact["customers"]
    vault = PiiVault.from_state(state["pii_vault"])
    assert [vault.entries[rows[0][k]].trusted for k in ("name", "email", "phone")] == [True] * 3
    assert not any(vault.entries[r[k]].trusted for r in rows[1:] for k in ("name", "email", "phone"))
    body = f"Reach {rows[0]['name']} at {rows[0]['email']}, not {rows[1]['email']}"
    real = json.dumps(guards.executor_args(state, "create_ticket", {"subject": "Contact", "body": body}))
    assert "Omar Okafor" in real and "omar.okafor1@acme.example" in real and "sara.nguyen2" not in real
    shown = guards.client_text(f"On file: {rows[0]['email']}; also {rows[1]['email']}", state["pii_vault"])
    assert "omar.okafor1@acme.example" in shown and "sara.nguyen2" not in shown
    # A staff principal (no binding) owns no record: every customer is a third party.
    staff = guard({"messages": [], "principal": {"sub": "agent", "tenant": "acme"}, "tenant": "acme"},
                  result("find_customer", CUSTOMERS))
    vault = PiiVault.from_state(staff["pii_vault"])
    assert not any(e.trusted for e in vault.entries.values())


def test_a_declared_name_is_replaced_in_the_free_text_of_the_same_result_too() -> None:
    vault, label = PiiVault(), get_policies().pii.labels.get
    record = {"customer": {"name": "Ivan Kowalski", "address": {"street": "Keizersgracht 12", "city": "Amsterdam"},
                           "date_of_birth": "1984-03-07"},
              "items": [{"sku": "SKU-100", "name": "USB-C dock"}],
              "note": "Ivan Kowalski asked to deliver to Keizersgracht 12; Ivan Kowalskiy is someone else."}
    fields = {"customer.name": "PERSON", "address": "STREET_ADDRESS", "date_of_birth": "DATE_OF_BIRTH"}
    text, artifact, n = pseudonymise_fields(json.dumps(record), record, fields, vault, label)
    assert n == 4
    assert artifact["items"][0]["name"] == "USB-C dock"  # `customer.name` does not match a product's `name`
    assert [TOKEN_RE.fullmatch(v) is not None for v in (artifact["customer"]["name"], artifact["customer"]["date_of_birth"],
                                                        *artifact["customer"]["address"].values())] == [True] * 4
    assert artifact["note"].startswith(f"{artifact['customer']['name']} asked to deliver to ")
    assert "Ivan Kowalskiy" in artifact["note"]  # whole words only
    assert json.loads(text) == artifact
    for raw in ("Keizersgracht", "1984-03-07", "Amsterdam"):
        assert raw not in text
    # A text rendered differently from the structure (an MCP server's own text): the raw values are replaced in
    # it, also JSON-escaped (ensure_ascii) non-ASCII ones.
    person = {"name": "Jürgen Müller", "x": 1}
    plain = "Found " + json.dumps(person) + " -- Jürgen Müller"
    text, artifact, n = pseudonymise_fields(plain, person, {"name": "PERSON"}, PiiVault(), label)
    assert n == 1 and "M\\u00fcller" not in text and "Müller" not in text
    assert text == f'Found {{"name": "{artifact["name"]}", "x": 1}} -- {artifact["name"]}'
    # A text result that is JSON is structure enough.
    text, artifact, n = pseudonymise_fields(json.dumps([person]), None, {"name": "PERSON"}, PiiVault(), label)
    assert (n, artifact) == (1, None) and "ller" not in text and TOKEN_RE.fullmatch(json.loads(text)[0]["name"])


def test_a_write_carrying_a_declared_name_traces_to_tool_data() -> None:
    state = guard({"messages": [SystemMessage("You are the support assistant.", id="s")],
                   "principal": {"sub": "CUS-101", "tenant": "acme"}, "tenant": "acme"},
                  HumanMessage("Open a ticket about my late parcel", id="u"))
    state["messages"].append(AIMessage("", tool_calls=[{"name": "find_customer", "args": {"query": "a"}, "id": "c1"}]))
    state = guard(state, result("find_customer", CUSTOMERS))
    name = state["messages"][-1].artifact["customers"][1]["name"]
    decision = guards.decide_tool_call(state, "create_ticket", {"subject": "Late parcel", "body": f"Contact {name}"})
    assert decision.action == "require_approval"
    assert any(r.startswith("provenance:body:from_tool_data") for r in decision.reasons), decision.reasons
    # ... and the name is never put back into the write's arguments (a third party's value).
    real = guards.executor_args(state, "create_ticket", {"subject": "Late parcel", "body": f"Contact {name}"})
    assert "Sara Nguyen" not in json.dumps(real)


def test_a_precheck_result_is_pseudonymised_by_its_tools_declaration() -> None:
    value, update = guards.pseudonymised_result({}, dict(CUSTOMERS["customers"][2]), "get_customer")
    assert "Kenji" not in json.dumps(value) and TOKEN_RE.fullmatch(value["name"])
    assert PiiVault.from_state(update["pii_vault"]).entries[value["name"]].value == "Kenji Lindqvist"


def test_the_shipped_policy_declares_the_sample_crm_fields() -> None:
    tools = get_policies().tools.tools
    for name in ("find_customer", "get_customer", "update_contact"):
        assert tools[name].pii_fields == {"name": "PERSON", "email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER"}


def _policy_copy(tmp_path: Path, pii_fields: Any) -> Path:
    directory = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, directory, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    data = yaml.safe_load((directory / "tools.yaml").read_text())
    data["tools"]["get_invoice"]["pii_fields"] = pii_fields
    (directory / "tools.yaml").write_text(yaml.safe_dump(data))
    return directory


@pytest.mark.parametrize(("fields", "where", "says"), [
    ({"billing.name": "PERSONS"}, "tools.get_invoice.pii_fields.billing.name", "unknown PII entity 'PERSONS'"),
    ({"billing..name": "PERSON"}, "tools.get_invoice.pii_fields", "not a field name or dotted path"),
    ({"name": "person"}, "tools.get_invoice.pii_fields", "not a PII entity name"),
    (["name"], "tools.get_invoice.pii_fields", "valid dictionary"),
])
def test_the_policy_loader_rejects_a_bad_declaration(tmp_path: Path, fields: Any, where: str, says: str) -> None:
    with pytest.raises(PolicyError) as err:
        load_policies(_policy_copy(tmp_path, fields))
    assert err.value.file == "tools.yaml" and err.value.field == where and says in str(err.value)


def test_the_policy_loader_accepts_a_known_entity(tmp_path: Path) -> None:
    policies = load_policies(_policy_copy(tmp_path, {"billing.name": "PERSON", "billing.address": "STREET_ADDRESS"}))
    assert policies.tools.tools["get_invoice"].pii_fields["billing.address"] == "STREET_ADDRESS"
