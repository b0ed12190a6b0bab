#!/usr/bin/env python3
"""Writes protocol/src/request_shape/schema.rs: the wire shape of every request Quipu serves, as
the kafka-protocol crate decodes it (field order, the versions each field is present in, its wire
type, tagged fields), read from that crate's `Decodable` implementations.

The request shape check walks a request with these tables before the crate decodes it, so that
every array count and tagged-field count the crate will act on is checked first. Run again when
the crate is upgraded or an API is added to SUPPORTED_APIS; the round-trip tests in
request_shape/mod.rs fail until then.

Usage: protocol/tools/request_shapes.py [path to kafka-protocol-<version>/src/messages] && cargo fmt
"""
import glob
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The request messages served (api/mod.rs SUPPORTED_APIS), by file stem.
SERVED = [
    "produce", "fetch", "list_offsets", "metadata", "api_versions", "create_topics",
    "delete_topics", "describe_configs", "describe_cluster", "create_partitions",
    "delete_records", "alter_configs", "incremental_alter_configs", "offset_for_leader_epoch",
    "init_producer_id", "find_coordinator", "join_group", "sync_group", "heartbeat",
    "leave_group", "offset_commit", "offset_fetch", "offset_delete", "list_groups",
    "describe_groups", "delete_groups", "describe_quorum", "elect_leaders",
    "alter_partition_reassignments", "list_partition_reassignments", "describe_log_dirs",
    # Served on the controller listener (broker/src/quorum/broker_api.rs).
    "broker_registration", "broker_heartbeat", "alter_partition",
]

# Other messages the broker decodes from client bytes: a consumer's subscription, which a
# JoinGroup carries as opaque protocol metadata.
EXTRA = ["consumer_protocol_subscription"]

SCALARS = {
    "Boolean": "Bool", "Int8": "I8", "Int16": "I16", "Int32": "I32", "Int64": "I64",
    "UInt16": "U16", "UInt32": "U32", "Float64": "F64", "Uuid": "Uuid",
    "String": "Str", "CompactString": "CompactStr", "Bytes": "Bytes",
    "CompactBytes": "CompactBytes", "UnsignedVarInt": "UVarInt", "VarInt": "VarInt",
    "VarLong": "VarLong",
}


def crate_messages():
    if len(sys.argv) > 1:
        return Path(sys.argv[1]), "given"
    lock = (ROOT / "Cargo.lock").read_text()
    version = re.search(r'name = "kafka-protocol"\nversion = "([^"]+)"', lock).group(1)
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = glob.glob(str(home / "registry" / "src" / "*" / f"kafka-protocol-{version}" / "src" / "messages"))
    if not found:
        sys.exit(f"kafka-protocol {version} is not in the cargo registry: run cargo fetch")
    return Path(found[0]), version


def block_after(text, start):
    """The text of the brace block that opens at or after `start`."""
    i = text.index("{", start)
    return text[i + 1:matching(text, i) - 1]


def versions(cond):
    """(min, max) from a condition on `version`."""
    lo, hi = 0, 32767
    for op, n in re.findall(r"version\s*(>=|<=|==|>|<)\s*(\d+)", cond):
        n = int(n)
        if op == ">=":
            lo = max(lo, n)
        elif op == ">":
            lo = max(lo, n + 1)
        elif op == "<=":
            hi = min(hi, n)
        elif op == "<":
            hi = min(hi, n - 1)
        else:
            lo, hi = max(lo, n), min(hi, n)
    return lo, hi


def struct_fields(text):
    """Struct name -> {field name: Rust type}."""
    out = {}
    for m in re.finditer(r"pub struct (\w+) \{", text):
        body = block_after(text, m.start())
        fields = {}
        for f in re.finditer(r"pub (\w+): ([^\n]+),\n", body):
            fields[f.group(1)] = f.group(2)
        out[m.group(1)] = fields
    return out


def element_struct(rust_type):
    """The struct a field of this Rust type holds (Vec<T>, Option<Vec<T>>, T, Option<T>)."""
    names = re.findall(r"[A-Z]\w*", rust_type)
    names = [n for n in names if n not in ("Vec", "Option", "IndexMap", "StrBytes", "Bytes")]
    return names[-1] if names else None


STEM = [""]


def wire(expr, rust_type):
    """The Rust `Wire` expression for a decode expression such as types::Array(types::Int32)."""
    expr = expr.strip()
    m = re.fullmatch(r"types::(Array|CompactArray)\((.*)\)", expr, re.S)
    if m:
        inner = wire(m.group(2), rust_type)
        kind = "Array" if m.group(1) == "Array" else "CompactArray"
        return f"Wire::{kind}(&{inner})"
    if re.fullmatch(r"types::Struct\s*\{\s*version\s*\}", expr):
        return f"Wire::Struct(&{qualified(element_struct(rust_type))})"
    if re.fullmatch(r"types::OptionStruct\s*\{\s*version\s*\}", expr):
        return f"Wire::OptionStruct(&{qualified(element_struct(rust_type))})"
    m = re.fullmatch(r"types::(\w+)", expr)
    if m and m.group(1) in SCALARS:
        return f"Wire::{SCALARS[m.group(1)]}"
    raise ValueError(f"unknown decode expression: {expr}")


def shape_name(struct):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", struct).upper()


def qualified(struct):
    """A struct's table name: its message's file stem, then its own name (several messages
    define structs of the same name)."""
    own = shape_name(struct)
    stem = STEM[0].upper()
    return own if own in (f"{stem}_REQUEST", stem) else f"{stem}__{own}"


FULL = [(0, 32767)]


def intersect(a, b):
    out = []
    for lo1, hi1 in a:
        for lo2, hi2 in b:
            lo, hi = max(lo1, lo2), min(hi1, hi2)
            if lo <= hi:
                out.append((lo, hi))
    return out


def complement(a):
    out, at = [], 0
    for lo, hi in sorted(a):
        if lo > at:
            out.append((at, lo - 1))
        at = max(at, hi + 1)
    if at <= 32767:
        out.append((at, 32767))
    return out


def matching(text, i):
    """Index just past the brace block opening at text[i] == '{'."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError("unbalanced")


def pieces(expr, rust_type):
    """[(version intervals, wire or None)] for the expression a field is decoded by."""
    expr = expr.strip()
    if expr.startswith("{") and expr.endswith("}"):
        return pieces(expr[1:-1], rust_type)
    if expr.startswith("if "):
        brace = expr.index("{")
        cond = FULL if False else [versions(expr[3:brace])]
        end = matching(expr, brace)
        then = pieces(expr[brace:end], rust_type)
        rest = expr[end:].strip()
        other = []
        if rest.startswith("else"):
            other = pieces(rest[4:].strip(), rust_type)
        out = [(intersect(v, cond), w) for v, w in then]
        out += [(intersect(v, complement(cond)), w) for v, w in other]
        return [(v, w) for v, w in out if v]
    m = re.search(r"(types::.*?)\.decode\(buf\)\?", expr, re.S)
    if m:
        return [(FULL, wire(m.group(1), rust_type))]
    return [(FULL, None)]


def statement_end(text, i):
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == ";" and depth == 0:
            return j
    raise ValueError("no end")


def parse_decode(name, body, fields):
    """Fields (in order) and tagged fields of one struct's decode body."""
    plain, tagged, tagged_versions = [], [], None
    for m in re.finditer(r"let (?:mut )?(\w+)(?:: [\w<>, ]+)? = ", body):
        field = m.group(1)
        if field in ("num_tagged_fields", "tag", "size", "unknown_tagged_fields", "unknown_value"):
            continue
        expr = body[m.end():statement_end(body, m.end())]
        for v, w in pieces(expr, fields.get(field, "")):
            if w is None:
                continue
            for lo, hi in v:
                plain.append((field, lo, hi, w))
    t = re.search(r"if ([^{]+)\{\s*let num_tagged_fields", body)
    if t or "let num_tagged_fields" in body:
        # Flexible from some version on, or (a message born flexible) at every version.
        tagged_versions = versions(t.group(1)) if t else (0, 32767)
        for m in re.finditer(r"\n\s*(\d+) => \{", body):
            arm_end = matching(body, m.end() - 1)
            arm = body[m.end() - 1:arm_end]
            a = re.search(r"(\w+) = (types::.*?)\.decode\(buf\)\?", arm, re.S)
            field = a.group(1)
            for v, w in pieces(arm[1:-1].replace(f"{field} = ", "", 1), fields.get(field, "")):
                if w is None:
                    continue
                for lo, hi in v:
                    tagged.append((int(m.group(1)), field, lo, hi, w))
    return plain, tagged, tagged_versions


def main():
    messages, version = crate_messages()
    shapes = {}
    order = []
    for stem in SERVED + EXTRA:
        STEM[0] = stem
        path = messages / f"{stem}_request.rs"
        text = (path if path.exists() else messages / f"{stem}.rs").read_text()
        fields = struct_fields(text)
        for m in re.finditer(r"impl Decodable for (\w+) \{", text):
            name = m.group(1)
            body = block_after(text, m.start())
            vr = re.search(r"if version < (\d+) \|\| version > (\d+)", body)
            plain, tagged, tagged_versions = parse_decode(name, body, fields[name])
            key = qualified(name)
            shapes[key] = (name, vr.groups() if vr else ("0", "32767"), plain, tagged, tagged_versions)
            order.append(key)
    out = [
        "//! Generated by protocol/tools/request_shapes.py from kafka-protocol "
        f"{version}'s decoders: do not edit.",
        "//! Each request message Quipu serves, and every struct inside one, as the wire shows it.",
        "",
        "use super::{Field, Shape, Tagged, Wire};",
        "",
    ]
    for key in order:
        name, (lo, hi), plain, tagged, tv = shapes[key]
        out.append(f"/// `{name}`.")
        out.append(f"pub static {key}: Shape = Shape {{")
        out.append(f'    name: "{name}",')
        out.append(f"    versions: ({lo}, {hi}),")
        out.append("    fields: &[")
        for field, flo, fhi, w in plain:
            out.append(f'        Field {{ name: "{field}", versions: ({flo}, {fhi}), wire: {w} }},')
        out.append("    ],")
        out.append(f"    tagged_versions: {'Some(' + repr(tv).replace(' ', '') + ')' if tv else 'None'},")
        out.append("    tagged: &[")
        for tag, field, flo, fhi, w in tagged:
            out.append(f'        Tagged {{ tag: {tag}, field: Field {{ name: "{field}", versions: ({flo}, {fhi}), wire: {w} }} }},')
        out.append("    ],")
        out.append("};")
        out.append("")
    top = {stem: f"{''.join(p.title() for p in stem.split('_'))}Request" for stem in SERVED}
    out.append("/// The shape of each served request message, by API key.")
    out.append("pub fn request(api: kafka_protocol::messages::ApiKey) -> Option<&'static Shape> {")
    out.append("    use kafka_protocol::messages::ApiKey as K;")
    out.append("    Some(match api {")
    for stem in SERVED:
        variant = top[stem][:-len("Request")]
        out.append(f"        K::{variant} => &{shape_name(top[stem])},")
    out.append("        _ => return None,")
    out.append("    })")
    out.append("}")
    target = ROOT / "protocol" / "src" / "request_shape" / "schema.rs"
    target.parent.mkdir(exist_ok=True)
    target.write_text("\n".join(out) + "\n")
    print(f"wrote {target}: {len(order)} shapes from kafka-protocol {version}")


if __name__ == "__main__":
    main()
