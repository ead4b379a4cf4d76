//! Protobuf descriptors → JSON Schema (the proto3 JSON mapping, as AsyncAPI
//! Schema objects), `.proto` text and source comments.
//!
//! Shared by the build script (`build/asyncapi.rs`, which generates the
//! protocol's document from `proto/ws.proto`) and the library (which adds
//! the typed routes' messages at run time): it uses only `prost_reflect`
//! and `serde_json`, nothing of the crate.

use prost_reflect::{
    Cardinality, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor,
};
use serde_json::{json, Map, Value};

/// Where schemas live in the document.
pub const SCHEMAS: &str = "#/components/schemas/";

/// The leading comment of the element at `path` in `file`, trimmed, with
/// the comment markers' single leading space removed from each line.
pub fn comment(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let loc = info.location.iter().find(|l| l.path == path)?;
    let text = loc.leading_comments.as_deref()?;
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect();
    let joined = lines.join("\n").trim().to_owned();
    (!joined.is_empty()).then_some(joined)
}

fn message_comment(m: &MessageDescriptor) -> Option<String> {
    comment(&m.parent_file(), m.path())
}

fn field_comment(f: &FieldDescriptor) -> Option<String> {
    comment(&f.parent_file(), f.path())
}

fn enum_comment(e: &EnumDescriptor) -> Option<String> {
    comment(&e.parent_file(), e.path())
}

/// A `$ref` to the schema of `full_name`.
pub fn reference(full_name: &str) -> Value {
    json!({ "$ref": format!("{SCHEMAS}{full_name}") })
}

/// Adds the schema of `m` (and of every message and enum it uses) to
/// `defs`, keyed by full name; returns a `$ref` to it.
pub fn message_ref(m: &MessageDescriptor, defs: &mut Map<String, Value>) -> Value {
    if !defs.contains_key(m.full_name()) {
        // Placeholder first: recursive messages stop here.
        defs.insert(m.full_name().to_owned(), Value::Null);
        let schema = message_schema(m, defs);
        defs.insert(m.full_name().to_owned(), schema);
    }
    reference(m.full_name())
}

fn message_schema(m: &MessageDescriptor, defs: &mut Map<String, Value>) -> Value {
    let mut props = Map::new();
    for f in m.fields() {
        let mut s = field_schema(&f, defs);
        let mut about = field_comment(&f).unwrap_or_default();
        if let Some(o) = f.containing_oneof().filter(|o| !o.is_synthetic()) {
            if !about.is_empty() {
                about.push(' ');
            }
            about.push_str(&format!("(one of `{}`)", o.name()));
        }
        if let Value::Object(o) = &mut s {
            if !about.is_empty() {
                o.insert("description".into(), Value::String(about));
            }
            o.insert("x-field-number".into(), json!(f.number()));
        }
        props.insert(f.name().to_owned(), s);
    }
    let mut schema = json!({
        "type": "object",
        "title": m.name(),
        "properties": props,
        "x-protobuf-message": m.full_name(),
    });
    if let Some(c) = message_comment(m) {
        schema["description"] = Value::String(c);
    }
    schema
}

fn field_schema(f: &FieldDescriptor, defs: &mut Map<String, Value>) -> Value {
    if f.is_map() {
        if let Kind::Message(entry) = f.kind() {
            let value = entry.map_entry_value_field();
            return json!({
                "type": "object",
                "additionalProperties": kind_schema(&value.kind(), defs),
            });
        }
    }
    let item = kind_schema(&f.kind(), defs);
    if f.cardinality() == Cardinality::Repeated {
        json!({ "type": "array", "items": item })
    } else {
        match item {
            // A `$ref` beside `description` is ignored by draft-07 readers:
            // wrap it.
            Value::Object(o) if o.contains_key("$ref") => json!({ "allOf": [Value::Object(o)] }),
            v => v,
        }
    }
}

fn kind_schema(k: &Kind, defs: &mut Map<String, Value>) -> Value {
    match k {
        Kind::Double | Kind::Float => json!({ "type": "number" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Kind::Uint32 | Kind::Fixed32 => json!({ "type": "integer", "minimum": 0 }),
        // 64-bit integers are strings in the proto3 JSON mapping (numbers
        // are accepted too).
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            json!({ "type": ["string", "integer"], "format": "int64" })
        }
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
        Kind::Message(m) => message_ref(m, defs),
        Kind::Enum(e) => enum_ref(e, defs),
    }
}

fn enum_ref(e: &EnumDescriptor, defs: &mut Map<String, Value>) -> Value {
    if !defs.contains_key(e.full_name()) {
        let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
        let mut about = enum_comment(e).unwrap_or_default();
        for v in e.values() {
            let c = comment(&e.parent_file(), v.path()).unwrap_or_default();
            about.push_str(&format!(
                "\n- `{}` ({}): {}",
                v.name(),
                v.number(),
                c.replace('\n', " ")
            ));
        }
        let numbers: Map<String, Value> = e
            .values()
            .map(|v| (v.name().to_owned(), json!(v.number())))
            .collect();
        defs.insert(
            e.full_name().to_owned(),
            json!({
                "type": "string",
                "title": e.name(),
                "enum": names,
                "description": about.trim(),
                "x-protobuf-enum": e.full_name(),
                "x-enum-numbers": numbers,
            }),
        );
    }
    reference(e.full_name())
}

/// The `.proto` text of `m` (with its comments, nested types and oneofs),
/// as it could be written in its package.
pub fn proto_text(m: &MessageDescriptor) -> String {
    let mut out = String::new();
    write_message(&mut out, m, 0);
    out
}

fn write_comment(out: &mut String, c: Option<String>, indent: &str) {
    for line in c.iter().flat_map(|c| c.lines()) {
        out.push_str(indent);
        out.push_str("//");
        if !line.is_empty() {
            out.push(' ');
            out.push_str(line);
        }
        out.push('\n');
    }
}

fn write_message(out: &mut String, m: &MessageDescriptor, depth: usize) {
    let pad = "  ".repeat(depth);
    write_comment(out, message_comment(m), &pad);
    out.push_str(&format!("{pad}message {} {{\n", m.name()));
    let inner = "  ".repeat(depth + 1);
    for e in m.child_enums() {
        write_enum(out, &e, depth + 1);
    }
    for c in m.child_messages().filter(|c| !c.is_map_entry()) {
        write_message(out, &c, depth + 1);
    }
    let mut open_oneof: Option<String> = None;
    for f in m.fields() {
        let oneof = f
            .containing_oneof()
            .filter(|o| !o.is_synthetic())
            .map(|o| o.name().to_owned());
        if open_oneof != oneof {
            if open_oneof.is_some() {
                out.push_str(&format!("{inner}}}\n"));
            }
            if let Some(o) = &oneof {
                out.push_str(&format!("{inner}oneof {o} {{\n"));
            }
            open_oneof = oneof;
        }
        let fpad = if open_oneof.is_some() {
            "  ".repeat(depth + 2)
        } else {
            inner.clone()
        };
        write_comment(out, field_comment(&f), &fpad);
        let label = match (f.cardinality(), f.is_map()) {
            (Cardinality::Repeated, false) => "repeated ",
            _ => "",
        };
        out.push_str(&format!(
            "{fpad}{label}{} {} = {};\n",
            type_name(&f, m),
            f.name(),
            f.number()
        ));
    }
    if open_oneof.is_some() {
        out.push_str(&format!("{inner}}}\n"));
    }
    out.push_str(&format!("{pad}}}\n"));
}

fn write_enum(out: &mut String, e: &EnumDescriptor, depth: usize) {
    let pad = "  ".repeat(depth);
    let inner = "  ".repeat(depth + 1);
    write_comment(out, enum_comment(e), &pad);
    out.push_str(&format!("{pad}enum {} {{\n", e.name()));
    for v in e.values() {
        write_comment(out, comment(&e.parent_file(), v.path()), &inner);
        out.push_str(&format!("{inner}{} = {};\n", v.name(), v.number()));
    }
    out.push_str(&format!("{pad}}}\n"));
}

fn type_name(f: &FieldDescriptor, within: &MessageDescriptor) -> String {
    let short = |full: &str| {
        let pkg = within.package_name();
        let local = full
            .strip_prefix(pkg)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(full);
        // A type nested in the message being written is named from there.
        local
            .strip_prefix(within.name())
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(local)
            .to_owned()
    };
    let scalar = |k: &Kind| match k {
        Kind::Double => "double".to_owned(),
        Kind::Float => "float".to_owned(),
        Kind::Int32 => "int32".to_owned(),
        Kind::Int64 => "int64".to_owned(),
        Kind::Uint32 => "uint32".to_owned(),
        Kind::Uint64 => "uint64".to_owned(),
        Kind::Sint32 => "sint32".to_owned(),
        Kind::Sint64 => "sint64".to_owned(),
        Kind::Fixed32 => "fixed32".to_owned(),
        Kind::Fixed64 => "fixed64".to_owned(),
        Kind::Sfixed32 => "sfixed32".to_owned(),
        Kind::Sfixed64 => "sfixed64".to_owned(),
        Kind::Bool => "bool".to_owned(),
        Kind::String => "string".to_owned(),
        Kind::Bytes => "bytes".to_owned(),
        Kind::Message(m) => short(m.full_name()),
        Kind::Enum(e) => short(e.full_name()),
    };
    match f.kind() {
        Kind::Message(entry) if f.is_map() => format!(
            "map<{}, {}>",
            scalar(&entry.map_entry_key_field().kind()),
            scalar(&entry.map_entry_value_field().kind())
        ),
        k => scalar(&k),
    }
}
