"""Rules and positive models (wsfw.policy): the condition language, the loader's errors, the
evaluator, exclusions, rate limits and the per-route positive model, through the real pipeline."""

from __future__ import annotations

import json
import textwrap

import msgpack
import pytest

from wsfw import cli, config_ini, decoders
from wsfw.errors import ConfigError
from wsfw.forwarding import client_address
from wsfw.hook import FORWARD, MessageView
from wsfw.inspection.audit import Audit
from wsfw.inspection.pipeline import build_pipelines
from wsfw.policy.glob import NameGlob, PathGlob
from wsfw.policy.lang import ParseError
from wsfw.policy.runtime import ConnState, Msg, compile_expr

BASE = """
[listen:a]
endpoint = tcp:1
[route:chat]
path = /socket.io/
upstream = ws://127.0.0.1:1
[route:hub]
path = /hub
upstream = ws://127.0.0.1:2
[route:gql]
path = /graphql
upstream = ws://127.0.0.1:3
[route:plain]
path = /
upstream = ws://127.0.0.1:4
"""
XSS = "<img src=x onerror=alert(document.cookie)>"
SQLI = "1' UNION SELECT username, password FROM users--"
PATHS = {"chat": "/socket.io/", "hub": "/hub", "gql": "/graphql", "plain": "/"}


def sio(event, *args) -> bytes:
    return ("42" + json.dumps([event, *args])).encode()


def signalr(target, *args) -> bytes:
    return (json.dumps({"type": 1, "target": target, "arguments": list(args)}) + "\x1e").encode()


def gql(name, variables=None, query=None) -> bytes:
    payload = {"query": query or f"subscription {name} {{ chat {{ id }} }}", "variables": variables or {}}
    if name:
        payload["operationName"] = name
    return json.dumps({"type": "subscribe", "id": "1", "payload": payload}).encode()


class Stack:
    """The pipelines of BASE + ``extra`` with an audit trail to look at."""

    def __init__(self, extra: str, clock=None, base=BASE):
        self.config = config_ini.load("test.ini", base + textwrap.dedent(extra))
        self.audit = Audit(None)
        self.events = []
        self.audit.publisher.addObserver(self.events.append)
        self.pipelines = build_pipelines(self.config, self.audit)
        if clock is not None:
            for p in self.pipelines.values():
                if p.policy is not None:
                    p.policy.clock = clock
        self.n = 0

    def send(self, payload: bytes, route="chat", conn=None, direction="client", headers=(), peer="192.0.2.7:5000",
             subprotocol=None, query="", binary=False):
        if conn is None:
            self.n += 1
            conn = f"c{self.n}"
        view = MessageView(conn_id=conn, route=route, peer=peer, direction=direction, index=1, payload=payload,
                           is_binary=binary, subprotocol=subprotocol, path=PATHS[route], query=query,
                           headers=tuple(headers))
        return self.pipelines[route].inspect_message(view)

    def blocked(self, payload, **kw) -> bool:
        verdict = self.send(payload, **kw)
        return verdict is not FORWARD and verdict.action == "close"

    @property
    def decisions(self):
        return [e for e in self.events if e.get("kind") in ("message", "http")]


def load_problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        config_ini.load("test.ini", BASE + textwrap.dedent(extra))
    return [str(p) for p in e.value.problems]


# -- the condition language --------------------------------------------------------------


def message(payload: bytes, framing="auto", headers=(), peer="192.0.2.7:5000", query="", subprotocol=None,
            path="/socket.io/", findings=(), settings=None):
    decoded = decoders.decode_message(payload, False, framing, decoders.Limits(), decoders.ConnectionState())
    view = MessageView(conn_id="c", route="r", peer=peer, direction="client", index=1, payload=payload,
                       is_binary=False, subprotocol=subprotocol, path=path, query=query, headers=tuple(headers))
    m = Msg(decoded, view, "client", len(payload), ConnState(), settings)
    m.findings = tuple(findings)
    return m


def holds(expr: str, m) -> bool:
    return compile_expr(expr).match(m) is not None


CHAT = message(sio("chat message", {"text": "hello <b>world</b>", "n": 42, "ok": True, "id": "6f1c8a52-7e52-4f3e-9d0b-1c2d3e4f5a6b"}),
               headers=[("origin", "https://chat.example.com"), ("cookie", "session=abc123; theme=dark"),
                        ("user-agent", "test")],
               query="EIO=4&transport=websocket&token=t0k", subprotocol="chat.v1")


@pytest.mark.parametrize("expr,expected", [
    ('event == "chat message"', True),
    ('event == "typing"', False),
    ('event != "typing"', True),
    ('event != "chat message"', False),
    ('socketio.event == "chat message"', True),
    ('signalr.target == "chat message"', False),
    ('not signalr.target exists', True),
    ('socketio.namespace == "/"', True),
    ('event in ["typing", "chat message"]', True),
    ('event in [typing, join]', False),
    ('event not in [typing, join]', True),
    ('event prefix "chat"', True),
    ('event suffix "message"', True),
    ('event contains "t m"', True),
    ('event matches "^c.*e$"', True),
    ("event matches '^\\w+ \\w+$'", True),
    ('param:"socketio.args[0].text" contains "<b>"', True),
    ('param:socketio.args[0].text prefix hello', True),
    ('param:"socketio.args[*].text" contains "<b>"', True),
    ('param:"socketio.*" contains "<b>"', False),
    ('param:"socketio.**" contains "<b>"', True),
    ('param:"socketio.args[0].n" == 42', True),
    ('param:"socketio.args[0].n" > 41.5', True),
    ('param:"socketio.args[0].n" >= 43', False),
    ('param:"socketio.args[0].n" < 100', True),
    ('param:"socketio.args[0].n" <= 42', True),
    ('param:"socketio.args[0].text" > 1', False),
    ('param:"socketio.args[0].n" is integer', True),
    ('param:"socketio.args[0].n" is number', True),
    ('param:"socketio.args[0].text" is number', False),
    ('param:"socketio.args[0].ok" is boolean', True),
    ('param:"socketio.args[0].id" is uuid', True),
    ('param:"socketio.args[0].text" is ascii', True),
    ('param:"socketio.args[0].text" is not empty', True),
    ('param:"socketio.args[0].nothing" is null', False),
    ('param:"socketio.args[0].text" exists', True),
    ('param:"socketio.args[1]" exists', False),
    ('len(param:"socketio.args[0].text") == 18', True),
    ('len(param:"socketio.args[0].text") > 100', False),
    ('len(event) < 13', True),
    ('origin == "https://chat.example.com"', True),
    ('header:origin suffix ".example.com"', True),
    ('header:User-Agent == test', True),
    ('header:x-missing exists', False),
    ('cookie:session == abc123', True),
    ('cookie:theme in [light, dark]', True),
    ('cookie:none exists', False),
    ('query:token == t0k', True),
    ('query contains "transport=websocket"', True),
    ('subprotocol == "chat.v1"', True),
    ('path prefix "/socket.io/"', True),
    ('framing == socketio', True),
    ('size > 50', True),
    ('size < 10', False),
    ('client == 192.0.2.7', True),
    ('client in [10.0.0.0/8, 192.0.2.0/24]', True),
    ('client in 10.0.0.0/8', False),
    ('client != 192.0.2.8', True),
    ('event == "chat message" and param:"socketio.args[0].n" == 42', True),
    ('event == "typing" or param:"socketio.args[0].n" == 42', True),
    ('event == "typing" or param:"socketio.args[0].n" == 43', False),
    ('not event == "typing" and not (client in 10.0.0.0/8 or origin prefix "http:")', True),
    ('event == "typing" or event == "chat message" and size < 10', False),  # and binds tighter
    ('(event == "typing" or event == "chat message") and size > 10', True),
    ('NOT event == typing AND size > 10', True),
])
def test_operators(expr, expected):
    """Every operator, on every kind of field, combined with and / or / not."""
    assert holds(expr, CHAT) is expected


def test_multivalued_fields_are_existential():
    """A test holds when one value passes: every invocation of a SignalR batch is an event."""
    batch = message(signalr("Send", "hi") + signalr("DeleteUser", 7), framing="signalr", path="/hub")
    assert holds('signalr.target == "DeleteUser"', batch)
    assert holds('event == "Send"', batch)
    assert not holds('event != "DeleteUser"', batch)
    assert holds('param:"signalr[1].arguments[0]" == 7', batch)


def test_graphql_operation_name_comes_from_the_query():
    """graphql.operationName is the operation wsfw sees run: named in the query when the field is absent."""
    m = message(gql(None, query="mutation DeleteAll { deleteAll }"), framing="graphqlws", path="/graphql")
    assert holds('graphql.operationName == "DeleteAll"', m)
    anonymous = message(gql(None, query="{ users { id } }"), framing="graphqlws", path="/graphql")
    assert not holds("graphql.operationName exists", anonymous)


def test_detection_fields():
    """detector / signature / score / inspector read the findings of the message."""
    from wsfw.inspection import Finding

    m = message(b"x", findings=[Finding("detect", "log", "xss", score=3, rules=("xss-004",), classes=("xss",))])
    assert holds("detector == xss and signature == xss-004 and score >= 3 and inspector == detect", m)
    assert holds("rule_id == xss-004", m)
    assert not holds("detector == sqli", m)
    assert holds("score == 0", message(b"x"))


def test_client_behind_trusted_proxies():
    """client is the peer, or behind a trusted proxy the nearest untrusted X-Forwarded-For / Forwarded hop."""
    settings = config_ini.load("t.ini", BASE + "[wsfw]\ntrusted_proxies = 10.0.0.0/8\n").settings
    via = [("x-forwarded-for", "203.0.113.9, 10.1.1.1")]
    assert holds("client == 203.0.113.9", message(b"x", headers=via, peer="10.0.0.2:1234", settings=settings))
    # not from a trusted proxy: the header is the client's own claim
    assert holds("client == 198.51.100.1", message(b"x", headers=via, peer="198.51.100.1:1234", settings=settings))
    assert client_address("10.0.0.2", [("forwarded", 'for="[2001:db8::1]:443";proto=https')], settings) == "2001:db8::1"
    assert client_address("10.0.0.2", [("x-forwarded-for", "10.9.9.9")], settings) == "10.9.9.9"
    assert client_address("::1", [], settings) == "::1"
    assert holds("client == ::1", message(b"x", peer="::1:4444"))


@pytest.mark.parametrize("expr,error", [
    ('event = "x"', "'=' is not an operator (did you mean '==' or '!='?) (at column 7"),
    ('evnt == "x"', "unknown field 'evnt' (did you mean 'event'?) (at column 1"),
    ('event == "x" and', "expected a field (event, param:\"glob\", header:NAME, client, ...), found the end"),
    ('(event == "x"', "expected ')' to close the '(' at column 1, found the end"),
    ('event == "x")', "unbalanced ')'"),
    ('event == "x" event', "expected 'and', 'or' or the end, found 'event'"),
    ('event', "expected an operator after event"),
    ('param == "x"', "param needs a name"),
    ('parm:"a" == 1', "unknown field prefix 'parm:' (did you mean param:?)"),
    ('client > 3', "client is a client address"),
    ('client == "not-an-ip"', "'not-an-ip' is not an IP address or CIDR network"),
    ('size contains "1"', "size is a number: 'contains' compares text"),
    ('size == big', "'big' is not a number"),
    ('event > big', "'big' is not a number"),
    ('len(client) > 3', "len() takes a text field"),
    ('event matches "(("', "bad regular expression"),
    ('event is text', "expected a type after 'is'"),
    ('event in []', "empty list"),
    ('event in [a, b', "unterminated list"),
    ('event == "unterminated', "unterminated string"),
    ('event == "bad \\q escape"', "bad escape in a double-quoted string"),
    ('event not x', "expected 'in' after 'not'"),
    ('event == and', "expected a value, found 'and'"),
])
def test_parse_errors(expr, error):
    """A bad condition names what is wrong and where."""
    with pytest.raises(ParseError) as e:
        compile_expr(expr)
    assert error in e.value.where(expr)


def test_parse_error_on_a_later_line():
    text = 'event == "x"\nand param:"a" contans "y"'
    with pytest.raises(ParseError) as e:
        compile_expr(text)
    assert "(at line 2, column 15" in e.value.where(text)


def test_globs():
    """* stays within one level, ** crosses levels, and a match covers the param's nested decodings."""
    g = PathGlob("socketio.args[*].text")
    assert g.match("socketio.args[0].text") and g.match("socketio.args[12].text<html>")
    assert not g.match("socketio.args[0].text.more") and not g.match("socketio.args[0].texts")
    exact = PathGlob("json.q")
    assert exact.match("json.q") and exact.match("json.q<url><b64>") and not exact.match("json.qq")
    assert PathGlob("json.**").match("json.a.b[3].c") and not PathGlob("json.*").match("json.a.b")
    assert NameGlob("/topic/rooms.*").match("/topic/rooms.lobby.1") and not NameGlob("com.app.?").match("com.app.xy")


def test_index_names():
    """Conditions requiring an operation name are indexed by it; others are candidates for every message."""
    assert compile_expr('event == "a" and size > 1').names == ("a",)
    assert compile_expr('size > 1 and signalr.target in [A, B]').names == ("A", "B")
    assert compile_expr('event == "a" or size > 1').names is None
    assert compile_expr('event != "a"').names is None


# -- the loader: every bad rule named by file, rule id and reason ----------------------------------


@pytest.mark.parametrize("section,error", [
    ("[rule:r1]\nwhen = event == x\n", "test.ini: [rule:r1] action: is required: one of allow, block, drop, log, "
                                       "exclude, rate-limit"),
    ("[rule:r1]\naction = blok\n", "test.ini: [rule:r1] action: 'blok' is not one of allow, block, drop, log, "
                                   "exclude, rate-limit (did you mean 'block'?)"),
    ("[rule:r1]\naction = block\nwhen = evnt == x\n", "test.ini: [rule:r1] when: unknown field 'evnt'"),
    ("[rule:r1]\naction = block\nroute = caht\n", "test.ini: [rule:r1] route: no [route:caht] (did you mean 'chat'?)"),
    ("[rule:r1]\naction = block\nwhne = x\n", "test.ini: [rule:r1] whne: unknown key (did you mean 'when'?)"),
    ("[rule:r1]\naction = block\npriority = first\n", "test.ini: [rule:r1] priority: 'first' is not a whole number"),
    ("[rule:r1]\naction = block\ndirection = down\n", "test.ini: [rule:r1] direction: 'down' is not one of client"),
    ("[rule:r1]\naction = block\ndirection = upstream\n", "inspect_upstream = yes"),
    ("[rule:r1]\naction = block\nphase = handshake\n", "test.ini: [rule:r1] phase: leave it out: a rule whose "
                                                       "conditions test only the handshake"),
    ("[rule:r1]\naction = block\nparam = x\n", "test.ini: [rule:r1] param: only applies to action = exclude"),
    ("[rule:r1]\naction = exclude\nroute = chat\ndetector = xss\n", "test.ini: [rule:r1] param: an exclusion needs "
                                                                    "the parameter path glob"),
    ("[rule:r1]\naction = exclude\ndetector = xss\nparam = a\n", "test.ini: [rule:r1] route: an exclusion needs the "
                                                                 "route(s)"),
    ("[rule:r1]\naction = exclude\nroute = chat\nparam = a\n", "test.ini: [rule:r1] detector: an exclusion needs the "
                                                               "detector"),
    ("[rule:r1]\naction = exclude\nroute = chat\nparam = a\ndetector = xsss\n", "test.ini: [rule:r1] detector: no "
                                                                                "detector 'xsss' (did you mean 'xss'?)"),
    ("[rule:r1]\naction = exclude\nroute = chat\nparam = a\nsignature = xss-999\n", "no signature id 'xss-999'"),
    ("[rule:r1]\naction = exclude\nroute = chat\nparam = a\ndetector = xss\nwhen = score > 2\n",
     "test.ini: [rule:r1] action: exclude cannot depend on detection results"),
    ("[rule:r1]\naction = allow\nwhen = detector == xss\n", "test.ini: [rule:r1] action: allow cannot depend on "
                                                            "detection results"),
    ("[rule:r1]\naction = rate-limit\n", "test.ini: [rule:r1] rate: is required for rate-limit"),
    ("[rule:r1]\naction = rate-limit\nrate = fast\n", "test.ini: [rule:r1] rate: 'fast' is not a rate"),
    ("[rule:r1]\naction = rate-limit\nrate = 5/s\nburst = 0\n", "test.ini: [rule:r1] burst: '0' is not a whole number"),
    ("[rule:r1]\naction = rate-limit\nrate = 5/s\nexceed = explode\n", "test.ini: [rule:r1] exceed: 'explode'"),
    ("[rule:bad id!]\naction = block\n", "test.ini: [rule:bad id!]: needs an id of letters"),
    ("[model:chat]\nallow = a\n", "test.ini: [model:chat] unknown: is required"),
    ("[model:chat]\nunknown = deny\n", "test.ini: [model:chat] unknown: 'deny' is not one of block, log, allow"),
    ("[model:caht]\nunknown = block\n", "test.ini: [model:caht]: no [route:caht] (did you mean [model:chat]?)"),
    ("[model:chat:x]\n", "test.ini: [model:chat:x]: needs a [model:chat] section"),
    ("[model:chat]\nunknown = block\nallow = x x\n", "test.ini: [model:chat] allow: 'x' is already allowed"),
    ("[model:chat]\nunknown = block\n[model:chat:x]\nschema = {nope}\n", "test.ini: [model:chat:x] schema: not JSON"),
    ("[model:chat]\nunknown = block\n[model:chat:x]\nschema = {\"type\": \"arrray\"}\n",
     "test.ini: [model:chat:x] schema: invalid JSON Schema at type: 'arrray' is not valid"),
    ("[model:chat]\nunknown = block\n[model:chat:x]\nschema = {\"type\": \"string\", \"pattern\": \"(\"}\n",
     "test.ini: [model:chat:x] schema: invalid JSON Schema at pattern"),
    ("[model:chat]\nunknown = block\n[model:chat:x]\nschema = {\"$ref\": \"https://evil.example/s.json\"}\n",
     "only references inside the schema"),
    ("[model:chat]\nunknown = block\n[model:chat:x]\nschema = {\"$schema\": \"http://json-schema.org/draft-07/schema#\"}\n",
     "draft 2020-12"),
    ("[model:chat]\nunknown = block\n[model:chat:x]\nschema_file = /nonexistent/s.json\n",
     "test.ini: [model:chat:x] schema_file: cannot read '/nonexistent/s.json'"),
    ("[inspection]\nrules = /nonexistent/rules.d/*.ini\n", "test.ini: [inspection] rules: directory "
                                                           "'/nonexistent/rules.d' does not exist"),
    ("[inspection]\nrules = /nonexistent/one.ini\n", "test.ini: [inspection] rules: no such file"),
])
def test_bad_rules_are_reported_with_file_section_and_reason(section, error):
    problems = load_problems(section)
    assert any(error in p for p in problems), problems


def test_every_problem_at_once():
    problems = load_problems("[rule:a]\naction = nope\n[rule:b]\naction = block\nwhen = x == 1\n"
                             "[model:chat]\nunknown = maybe\n")
    assert len(problems) == 3


def test_rule_files(tmp_path):
    """Rule files load in sorted order from the glob, relative to the config; errors name the rule file."""
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "20-b.ini").write_text("[rule:b]\naction = log\n")
    (tmp_path / "rules.d" / "10-a.ini").write_text("[rule:a]\naction = log\n[model:chat]\nunknown = log\n")
    (tmp_path / "rules.d" / "README").write_text("not a rules file")
    (tmp_path / "rules.d" / "x.ini.example").write_text("[rule:c]\naction = log\n")
    main = tmp_path / "wsfw.ini"
    main.write_text(BASE + "[inspection]\nrules = rules.d/*.ini\n[rule:main]\naction = log\npriority = 200\n")
    config = config_ini.load(str(main))
    assert [r.id for r in config.policy.rules] == ["a", "b", "main"]
    assert [f.rsplit("/", 1)[1] for f in config.policy.files] == ["10-a.ini", "20-b.ini"]
    (tmp_path / "rules.d" / "30-bad.ini").write_text("[rule:a]\naction = log\n[route:x]\nupstream = ws://x\n"
                                                     "[rule:c]\naction = block\nwhen = param:x contains\n")
    with pytest.raises(ConfigError) as e:
        config_ini.load(str(main))
    bad = str(tmp_path / "rules.d" / "30-bad.ini")
    problems = [str(p) for p in e.value.problems]
    assert f"{bad}: [rule:a]: rule id 'a' is already used by {tmp_path / 'rules.d' / '10-a.ini'}: [rule:a]" in problems
    assert any(p.startswith(f"{bad}: [route:x]: a rules file holds only") for p in problems)
    assert any(p.startswith(f"{bad}: [rule:c] when: expected a string, found the end") for p in problems)


def test_check_config_reports_a_bad_rules_file(tmp_path, capsys):
    """wsfw check-config covers rule files: exit 1 and one line per problem, naming file, rule and reason."""
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "chat.ini").write_text("[rule:no-xss-here]\naction = exclude\nroute = chat\n"
                                                   "param = socketio.args[0]\ndetector = xsss\n")
    main = tmp_path / "wsfw.ini"
    main.write_text(BASE + "[inspection]\nrules = rules.d/*.ini\n")
    assert cli.main(["check-config", str(main)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'rules.d' / 'chat.ini'}: [rule:no-xss-here] detector: no detector 'xsss' (did you mean 'xss'?)" in err
    (tmp_path / "rules.d" / "chat.ini").write_text("[rule:ok]\naction = log\n[model:chat]\nunknown = block\n")
    assert cli.main(["check-config", str(main)]) == 0
    assert "1 rule(s), 1 positive model(s) from 1 rule file(s)" in capsys.readouterr().out


def test_shipped_example_rules_load(tmp_path):
    """etc/rules.d/examples.ini.example is a valid rules file for routes of those names."""
    import shutil

    shutil.copy("etc/rules.d/examples.ini.example", tmp_path / "examples.ini")
    routes = "".join(f"[route:{name}]\npath = /{name}\nupstream = ws://127.0.0.1:1\n"
                     for name in ("chat", "hub", "graphql", "stomp"))
    main = tmp_path / "wsfw.ini"
    main.write_text(f"[listen:a]\nendpoint = tcp:1\n{routes}[inspection]\nrules = examples.ini\n")
    config = config_ini.load(str(main))
    assert len(config.policy.rules) >= 5 and len(config.policy.models) >= 3


# -- rules in the pipeline -------------------------------------------------------------------


def test_route_without_rules_has_no_policy():
    """Routes without rules or a model pay one check: their pipeline has no policy at all."""
    stack = Stack("[rule:r]\nroute = hub\naction = log\n")
    assert stack.pipelines["chat"].policy is None and stack.pipelines["hub"].policy is not None
    assert Stack("").pipelines["chat"].policy is None


def test_block_rule_audited_with_rule_id_action_param_and_tags():
    stack = Stack("""
        [rule:no-delete]
        route = hub
        when = signalr.target == "DeleteUser"
        action = block
        msg = only the back office deletes users
        tag = admin audit
    """)
    verdict = stack.send(signalr("DeleteUser", 7), route="hub")
    assert (verdict.action, verdict.code, verdict.rule) == ("close", 1008, "no-delete")
    record = stack.decisions[-1]
    assert (record["rule_ids"], record["action"], record["enforced"], record["param"], record["tags"],
            record["inspector"], record["classes"]) == (["no-delete"], "block", True, "signalr.target",
                                                        ["admin", "audit"], "rules", ["rule"])
    assert record["reason"] == "only the back office deletes users" and record["excerpt"] == "DeleteUser"
    assert stack.send(signalr("Send", "hi"), route="hub") is FORWARD
    assert stack.send(signalr("DeleteUser", 7), route="chat") is FORWARD  # another route


def test_block_rule_in_detect_mode_is_audited_not_enforced():
    stack = Stack("[wsfw]\nmode = detect\n[rule:r]\nwhen = event == DeleteUser\naction = block\n")
    assert stack.send(signalr("DeleteUser"), route="hub") is FORWARD
    assert (stack.decisions[-1]["action"], stack.decisions[-1]["enforced"]) == ("detect", False)


def test_log_rule_tags_and_forwards():
    stack = Stack('[rule:watch]\nwhen = param:"socketio.args[0]" contains "admin"\naction = log\ntag = watch\n')
    assert stack.send(sio("chat message", "who is admin?")) is FORWARD
    record = stack.decisions[-1]
    assert (record["action"], record["enforced"], record["tags"], record["param"]) == (
        "log", False, ["watch"], "socketio.args[0]")


def test_drop_rule_keeps_the_connection():
    stack = Stack('[rule:quiet]\nwhen = event == "typing"\naction = drop\n')
    verdict = stack.send(sio("typing"))
    assert (verdict.action, verdict.rule) == ("drop", "quiet")


def test_allow_skips_detection_and_later_rules():
    """allow: the message is forwarded without the detectors, the model or any later rule."""
    stack = Stack(f"""
        [rule:monitoring]
        priority = 10
        when = client in 10.0.0.0/8 and header:x-monitor == "yes"
        action = allow
        [rule:later]
        priority = 20
        action = block
    """)
    attack = sio("chat message", XSS)
    assert stack.send(attack, peer="10.1.2.3:1", headers=[("x-monitor", "yes")]) is FORWARD
    assert stack.decisions == []
    verdict = stack.send(attack, peer="192.0.2.1:1", headers=[("x-monitor", "yes")])
    assert verdict.rule == "later"


def test_priority_orders_rules_and_first_terminal_wins():
    stack = Stack("""
        [rule:b-block]
        priority = 50
        action = block
        [rule:a-log]
        priority = 5
        action = log
        [rule:c-never]
        priority = 60
        action = log
    """)
    verdict = stack.send(b"hello", route="plain")
    assert verdict.rule == "b-block"
    assert [e["rule_ids"][0] for e in stack.decisions] == ["a-log", "b-block"]


def test_rules_on_detection_results():
    """A rule on detector / score runs after the detectors: here it blocks a sub-threshold finding."""
    stack = Stack("[inspector:detect]\nanomaly_threshold = 50\n"
                  '[rule:strict-search]\nroute = chat\nwhen = event == "search" and score >= 5\naction = block\n')
    assert stack.send(sio("chat message", XSS)) is FORWARD  # threshold 50: detect alone only logs
    verdict = stack.send(sio("search", XSS))
    assert verdict.rule == "strict-search"
    assert stack.decisions[-1]["rule_ids"] == ["strict-search"]


def test_rate_limit_per_connection_token_bucket():
    now = [1000.0]
    stack = Stack('[rule:typing-flood]\nwhen = event == "typing"\naction = rate-limit\nrate = 2/s\nburst = 3\n',
                  clock=lambda: now[0])
    for _ in range(3):
        assert stack.send(sio("typing"), conn="a") is FORWARD
    verdict = stack.send(sio("typing"), conn="a")
    assert (verdict.code, verdict.rule) == (1008, "typing-flood")
    assert "rate limit exceeded (2/s)" in stack.decisions[-1]["reason"]
    assert stack.send(sio("typing"), conn="b") is FORWARD  # another connection has its own bucket
    assert stack.send(sio("chat message", "x"), conn="a") is FORWARD  # other messages are not counted
    now[0] += 0.5  # one token back
    assert stack.send(sio("typing"), conn="a") is FORWARD
    assert stack.send(sio("typing"), conn="a") is not FORWARD
    stack.pipelines["chat"].connection_closed("a")
    assert stack.send(sio("typing"), conn="a") is FORWARD


def test_rate_limit_exceed_drop_and_log():
    now = [0.0]
    stack = Stack('[rule:d]\nwhen = event == a\naction = rate-limit\nrate = 1/m\nexceed = drop\n'
                  '[rule:l]\nwhen = event == b\naction = rate-limit\nrate = 1/h\nexceed = log\n', clock=lambda: now[0])
    assert stack.send(sio("a"), conn="x") is FORWARD and stack.send(sio("a"), conn="x").action == "drop"
    assert stack.send(sio("b"), conn="x") is FORWARD and stack.send(sio("b"), conn="x") is FORWARD
    assert stack.decisions[-1]["action"] == "log"


def test_upstream_rules():
    """direction = upstream rules see upstream -> client messages of routes that inspect them."""
    stack = Stack('[rule:no-secrets]\nroute = hub\ndirection = upstream\nwhen = param:"**" contains "s3cret"\n'
                  'action = drop\n', base=BASE.replace("upstream = ws://127.0.0.1:2\n",
                                                        "upstream = ws://127.0.0.1:2\ninspect_upstream = yes\n"))
    assert stack.send(signalr("Show", "the s3cret"), route="hub", direction="upstream").rule == "no-secrets"
    assert stack.send(signalr("Show", "the s3cret"), route="hub") is FORWARD  # client messages: not this rule


def test_index_selects_candidates():
    stack = Stack("""
        [rule:a]
        when = event == "a" and size > 0
        action = log
        [rule:b]
        when = event in [b, c]
        action = log
        [rule:any]
        action = log
    """)
    policy = stack.pipelines["chat"].policy
    index = policy.pre["client"]
    m = message(sio("b"))
    assert [r.id for r in index.candidates(m)] == ["b", "any"]
    assert [r.id for r in index.candidates(message(sio("zzz")))] == ["any"]
    assert [r.id for r in index.candidates(message(signalr("a") + signalr("c"), framing="signalr"))] == ["a", "b", "any"]


# -- exclusions ----------------------------------------------------------------------------------

EXCLUSION = """
[rule:markdown-fp]
route = chat
when = event == "chat message"
action = exclude
detector = xss
param = socketio.args[0].text
"""


def test_exclusion_silences_one_detector_on_one_path_on_one_route():
    stack = Stack(EXCLUSION)
    # the false positive: markup in the message text of a chat message, on the chat route
    assert stack.send(sio("chat message", {"text": XSS})) is FORWARD
    # the same payload in another parameter of the same message
    assert stack.blocked(sio("chat message", {"text": "ok", "title": XSS}))
    assert stack.blocked(sio("chat message", {"text": "hi"}, {"text": XSS}))
    # in the excluded parameter of another event
    assert stack.blocked(sio("note", {"text": XSS}))
    # on another route
    assert stack.blocked(sio("chat message", {"text": XSS}), route="plain")
    # another detector in the excluded parameter
    assert stack.blocked(sio("chat message", {"text": SQLI}))
    # percent-encoded into the excluded parameter: still the same value, still excluded
    assert stack.send(sio("chat message", {"text": "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"})) is FORWARD


def test_exclusion_of_one_signature_id():
    """signature = ID silences only that signature: others of the class still count."""
    from wsfw.detect import Engine

    hits = Engine().scan([("socketio.args[0].text", XSS)])
    ids = sorted({m.rule_id for m in hits.matches})
    assert len(ids) > 1
    everything_but = ids[0]
    stack = Stack(EXCLUSION.replace("detector = xss", f"signature = {everything_but}"))
    assert stack.blocked(sio("chat message", {"text": XSS}))  # the other xss signatures still fire
    record = stack.decisions[-1]
    assert everything_but not in record["rule_ids"] and record["rule_ids"]
    stack = Stack(EXCLUSION.replace("detector = xss", "signature = " + " ".join(ids)))
    assert stack.send(sio("chat message", {"text": XSS})) is FORWARD


def test_exclusion_for_inspectors_without_per_param_support():
    """Third-party inspectors get their finding dropped when all its rules are excluded at its param."""
    from wsfw.inspection import Finding
    from wsfw.inspection.pipeline import _without_excluded
    from wsfw.policy.runtime import Exclusion, exclusion_filter

    exclude = exclusion_filter([Exclusion("json.a", ["leak-x"])])
    finding = Finding("plugin", "block", "x", rules=("leak-x",), classes=("leak",), path="json.a")
    assert _without_excluded(finding, exclude) is None
    assert _without_excluded(Finding("plugin", "block", "x", rules=("leak-y",), path="json.a"), exclude) is not None
    assert _without_excluded(Finding("plugin", "block", "x", rules=("leak-x",), path="json.b"), exclude) is not None


# -- the positive model ------------------------------------------------------------------------

MODEL = """
[model:chat]
unknown = block
allow = typing "user:join"

[model:chat:chat message]
schema = {"type": "array", "minItems": 1, "maxItems": 1,
          "prefixItems": [{"type": "object",
                           "properties": {"text": {"type": "string", "maxLength": 200},
                                          "room": {"type": "integer", "minimum": 1}},
                           "required": ["text"], "additionalProperties": false}]}

[model:chat:/rooms/*]
"""


def test_model_allows_listed_events_with_valid_arguments():
    stack = Stack(MODEL)
    assert stack.send(sio("chat message", {"text": "hello", "room": 3})) is FORWARD
    assert stack.send(sio("typing")) is FORWARD
    assert stack.send(sio("user:join", "bob")) is FORWARD
    assert stack.send(sio("/rooms/lobby")) is FORWARD  # a pattern
    for control in (b"40", b"2", b"3", b"41"):  # CONNECT, ping, pong, DISCONNECT
        assert stack.send(control) is FORWARD
    assert stack.decisions == []


@pytest.mark.parametrize("args,where", [
    ([{"text": "x" * 201}], "0/text"),
    ([{"text": "hi", "room": 0}], "0/room"),
    ([{"text": "hi", "room": "3"}], "0/room"),
    ([{"text": "hi", "admin": True}], "0"),
    ([{"room": 1}], "0"),
    ([], "(the arguments)"),
    ([{"text": "a"}, {"text": "b"}], "(the arguments)"),
])
def test_schema_violation_blocks(args, where):
    stack = Stack(MODEL)
    verdict = stack.send(sio("chat message", *args))
    assert (verdict.action, verdict.code, verdict.rule) == ("close", 1008, "model-schema")
    record = stack.decisions[-1]
    assert record["inspector"] == "model" and record["classes"] == ["positive_model"]
    assert f"violate the schema at {where}" in record["reason"]


def test_schema_violation_names_the_parameter():
    stack = Stack(MODEL)
    stack.send(sio("chat message", {"text": "hi", "room": 0}))
    assert stack.decisions[-1]["param"] == "socketio.args[0].room"


@pytest.mark.parametrize("unknown,blocked,audited", [("block", True, "block"), ("log", False, "log"),
                                                     ("allow", False, None)])
def test_unknown_events_per_config(unknown, blocked, audited):
    stack = Stack(MODEL.replace("unknown = block", f"unknown = {unknown}"))
    verdict = stack.send(sio("delete everything", 1))
    assert (verdict is not FORWARD) is blocked
    if audited is None:
        assert stack.decisions == []
    else:
        record = stack.decisions[-1]
        assert (record["action"], record["rule_ids"], record["param"]) == (audited, ["model-unknown"],
                                                                          "socketio.event")
        assert "'delete everything' is not in the route's allow-list" in record["reason"]
    # a schema violation blocks whatever unknown says
    assert stack.blocked(sio("chat message", {"text": 5}))


def test_model_unknown_covers_what_it_cannot_read():
    stack = Stack(MODEL + "[model:plain]\nunknown = block\nallow = Send\n")
    assert stack.blocked(b'{"not": "a framework"}', route="plain")  # plain JSON
    assert "json message: this route's positive model only admits framework operations" in stack.decisions[-1]["reason"]
    assert stack.blocked(b"just text", route="plain")
    assert stack.blocked(b'{"not": "socket.io"}')  # not Engine.IO on a Socket.IO route
    assert "undecodable engineio message" in stack.decisions[-1]["reason"]
    assert stack.blocked(b'42["chat message", {"text": "unterminated')  # undecodable
    assert stack.blocked(b"42" + json.dumps(["typing"] + ["x"] * 2000).encode())  # past the params bound
    assert "too large to check" in stack.decisions[-1]["reason"]
    assert stack.blocked(b'42[{"no": "name"}]')


def test_model_applies_to_client_messages_only():
    stack = Stack(MODEL, base=BASE.replace("upstream = ws://127.0.0.1:1\n",
                                           "upstream = ws://127.0.0.1:1\ninspect_upstream = yes\n"))
    assert stack.send(sio("server event"), direction="upstream") is FORWARD
    assert stack.blocked(sio("server event"))


def test_model_checks_every_operation_of_a_batch():
    stack = Stack("[model:hub]\nunknown = block\nallow = Send\n")
    assert stack.send(signalr("Send", "hi"), route="hub") is FORWARD
    assert stack.blocked(signalr("Send", "hi") + signalr("DeleteUser", 1), route="hub")
    assert stack.decisions[-1]["param"] == "signalr[1].target"
    assert stack.send(b'{"protocol":"json","version":1}\x1e{"type":6}\x1e', route="hub") is FORWARD


def test_signalr_messagepack_arguments_are_validated():
    stack = Stack('[model:hub]\nunknown = block\n[model:hub:Send]\nschema = {"type": "array", "prefixItems": '
                  '[{"type": "string"}, {"type": "object", "required": ["a"]}]}\n')
    stack.send(b'{"protocol":"messagepack","version":1}\x1e', route="hub", conn="m")

    def record(target, args):
        body = msgpack.packb([1, {}, "1", target, args])
        return bytes([len(body)]) + body
    assert stack.send(record("Send", ["hi", {"a": [1, 2]}]), route="hub", conn="m", binary=True) is FORWARD
    assert stack.blocked(record("Send", ["hi", {"b": 1}]), route="hub", conn="m", binary=True)
    assert stack.blocked(record("Nope", []), route="hub", conn="m", binary=True)


def test_graphql_operation_allow_list():
    stack = Stack('[model:gql]\nunknown = block\nallow = OnChat\n[model:gql:SendMessage]\n'
                  'schema = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 10}}, '
                  '"required": ["text"]}\n')
    sub = "graphql-transport-ws"
    assert stack.send(b'{"type":"connection_init"}', route="gql", subprotocol=sub) is FORWARD
    assert stack.send(gql("OnChat"), route="gql", subprotocol=sub) is FORWARD
    assert stack.send(gql("SendMessage", {"text": "hi"}, "mutation SendMessage($text: String!) { send(text: $text) }"),
                      route="gql", subprotocol=sub) is FORWARD
    assert stack.blocked(gql("SendMessage", {"text": "far too long"}), route="gql", subprotocol=sub)
    assert stack.blocked(gql("DropTables"), route="gql", subprotocol=sub)
    assert stack.blocked(gql(None, query="{ users { password } }"), route="gql", subprotocol=sub)  # anonymous
    assert "(none) is not in the route's allow-list" in stack.decisions[-1]["reason"]


def test_stomp_wamp_jsonrpc_operations():
    stack = Stack('[model:plain]\nunknown = block\nallow = /topic/* com.app.sub\n'
                  '[model:plain:/app/chat]\nschema = {"type": "object", "required": ["text"]}\n'
                  '[model:plain:com.app.add]\nschema = {"type": "object", "properties": {"args": {"type": "array", '
                  '"items": {"type": "integer"}}}}\n'
                  '[model:plain:sum]\nschema = {"type": "array", "items": {"type": "number"}}\n')

    def stomp(frame):
        return stack.send(frame, route="plain", subprotocol="v12.stomp")
    assert stomp(b"CONNECT\naccept-version:1.2\nhost:x\n\n\x00") is FORWARD
    assert stomp(b"SUBSCRIBE\nid:0\ndestination:/topic/room.1\n\n\x00") is FORWARD
    assert stomp(b"SUBSCRIBE\nid:1\ndestination:/app/chat\n\n\x00") is FORWARD  # no arguments to validate
    assert stomp(b'SEND\ndestination:/app/chat\ncontent-type:application/json\n\n{"text":"hi"}\x00') is FORWARD
    assert stomp(b'SEND\ndestination:/app/chat\ncontent-type:application/json\n\n{"txt":"hi"}\x00') is not FORWARD
    assert stomp(b"SEND\ndestination:/queue/admin\n\nhi\x00") is not FORWARD

    def wamp(msg):
        return stack.send(json.dumps(msg).encode(), route="plain", subprotocol="wamp.2.json")
    assert wamp([48, 1, {}, "com.app.add", [1, 2]]) is FORWARD
    assert wamp([48, 2, {}, "com.app.add", [1, "2"]]) is not FORWARD
    assert stack.decisions[-1]["param"] == "wamp.args[1]"
    assert wamp([32, 3, {}, "com.app.sub"]) is FORWARD
    assert wamp([48, 4, {}, "com.app.drop"]) is not FORWARD

    def rpc(msg):
        return stack.send(json.dumps(msg).encode(), route="plain", conn="rpc")
    assert rpc({"jsonrpc": "2.0", "method": "sum", "params": [1, 2.5], "id": 1}) is FORWARD
    assert rpc({"jsonrpc": "2.0", "result": 3.5, "id": 1}) is FORWARD  # a response: control
    assert rpc([{"jsonrpc": "2.0", "method": "sum", "params": [1], "id": 1},
                {"jsonrpc": "2.0", "method": "shutdown", "id": 2}]) is not FORWARD
    assert stack.decisions[-1]["param"] == "jsonrpc[1].method"


def test_schema_file_relative_to_the_rules_file(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "msg.json").write_text(json.dumps({"type": "array", "maxItems": 1}))
    (tmp_path / "chat.ini").write_text("[model:chat]\nunknown = log\n[model:chat:say]\nschema_file = schemas/msg.json\n")
    main = tmp_path / "wsfw.ini"
    main.write_text(BASE + "[inspection]\nrules = chat.ini\n")
    pipeline = build_pipelines(config_ini.load(str(main)), Audit(None))["chat"]
    view = MessageView(conn_id="c", route="chat", peer="1.2.3.4:1", direction="client", index=1, payload=sio("say", 1),
                       is_binary=False, subprotocol=None, path="/socket.io/")
    assert pipeline.inspect_message(view) is FORWARD
    assert pipeline.inspect_message(view._replace(payload=sio("say", 1, 2))).code == 1008


def test_rules_on_polling_bodies_see_request_headers():
    stack = Stack('[rule:no-bot]\nroute = chat\nwhen = header:user-agent contains "bot"\naction = block\n')
    pipeline = stack.pipelines["chat"]
    kwargs = dict(body=b'42["chat message","hi"]', content_type="text/plain", peer="192.0.2.1",
                  path="/socket.io/", query="EIO=4&transport=polling&sid=s1")
    session = pipeline.http_session(kwargs["path"], kwargs["query"])
    assert pipeline.inspect_http_body(session=session, headers=(("user-agent", "firefox"),), **kwargs) is FORWARD
    verdict = pipeline.inspect_http_body(session=session, headers=(("user-agent", "evilbot"),), **kwargs)
    assert verdict.rule == "no-bot" and stack.decisions[-1]["kind"] == "http"


def test_inspect_shows_rule_hits(tmp_path, capsys, monkeypatch):
    """wsfw inspect lists the rules that matched each message and the model's decisions."""
    import io

    main = tmp_path / "wsfw.ini"
    main.write_text(BASE + textwrap.dedent(MODEL) + textwrap.dedent(EXCLUSION)
                    + '[rule:watch]\nwhen = header:origin prefix "http:"\naction = log\ntag = insecure-origin\n')
    lines = "\n".join([sio("chat message", {"text": XSS}).decode(), sio("nope").decode(),
                       sio("chat message", {"text": "hi", "x": 1}).decode()]) + "\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(lines.encode())))
    assert cli.main(["inspect", "--config", str(main), "--route", "chat", "--path", "/socket.io/",
                     "--header", "Origin: http://evil.example"]) == 0
    out = capsys.readouterr().out
    assert "rule: watch log param=header:origin" in out
    assert "rule: markdown-fp exclude param=socketio.args[0].text" in out
    assert "rule: model-unknown block param=socketio.event" in out
    assert "rule: model-schema block param=socketio.args[0]" in out
    assert "tags=insecure-origin" in out
    assert "3 message(s), 2 would be blocked" in out


def test_schema_checked_before_unknown_and_bounds():
    """A schema violation blocks even when unknown = log and the message also carries an unlisted
    operation or did not fully decode; arguments cut short by a bound are never vouched for."""
    stack = Stack('[model:hub]\nunknown = log\n[model:hub:Send]\nschema = {"type": "array", "maxItems": 1}\n')
    assert stack.blocked(signalr("Nope") + signalr("Send", 1, 2), route="hub")
    assert stack.decisions[-1]["rule_ids"] == ["model-schema"]
    broken = signalr("Send", 1, 2) + b'{"broken\x1e'
    assert decoders.decode_message(broken, False, "auto", decoders.Limits(), decoders.ConnectionState()).error
    assert stack.blocked(broken, route="hub")
    assert stack.send(signalr("Send", 1) + b'{"broken\x1e', route="hub") is FORWARD  # unknown = log
    assert stack.decisions[-1]["rule_ids"] == ["model-undecodable"]
    huge = signalr("Send", ["x"] * 1500)  # past max_params: its arguments were not all seen
    assert stack.blocked(huge, route="hub")
    assert "too large to validate" in stack.decisions[-1]["reason"]
    # the depth bound hit inside a string's nested encodings leaves the arguments whole
    deep = json.dumps({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}})
    decoded = decoders.decode_message(signalr("Send", deep), False, "signalr", decoders.Limits(max_depth=3),
                                      decoders.ConnectionState())
    assert decoded.truncated == "depth"
    assert stack.pipelines["hub"].policy.model.check(decoded) is None
