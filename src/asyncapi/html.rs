//! The AsyncAPI document as one readable HTML page: no script, no style
//! sheet or font fetched, so it works offline and behind any CSP.

use std::fmt::Write as _;

use serde_json::Value;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

fn text(v: &Value) -> String {
    v.as_str().map(esc).unwrap_or_default()
}

/// Prose from the `.proto` comments: paragraphs, `code` spans and the
/// generated tables, kept readable.
fn prose(v: &Value) -> String {
    let s = v.as_str().unwrap_or_default();
    let mut out = String::new();
    for block in s.split("\n\n") {
        let lines: Vec<&str> = block.lines().collect();
        if lines.first().is_some_and(|l| l.starts_with('|')) {
            out.push_str("<table>");
            for (i, l) in lines
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.starts_with("|--"))
            {
                let tag = if i == 0 { "th" } else { "td" };
                out.push_str("<tr>");
                for cell in l.trim_matches('|').split(" | ") {
                    let _ = write!(out, "<{tag}>{}</{tag}>", code_spans(cell.trim()));
                }
                out.push_str("</tr>");
            }
            out.push_str("</table>");
        } else if lines.iter().all(|l| l.starts_with("- ")) && !lines.is_empty() {
            out.push_str("<ul>");
            for l in lines {
                let _ = write!(out, "<li>{}</li>", code_spans(&l[2..]));
            }
            out.push_str("</ul>");
        } else {
            let _ = write!(out, "<p>{}</p>", code_spans(&lines.join(" ")));
        }
    }
    out
}

fn code_spans(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
        } else {
            out.push_str(&esc(part).replace("**", ""));
        }
    }
    out
}

/// Follows a local `$ref`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .trim_start_matches("#/")
            .split('/')
            .fold(doc, |node, key| &node[key]),
        None => v,
    }
}

/// A one-line type of a property schema.
fn type_of(v: &Value) -> String {
    let v = match v.get("allOf").and_then(|a| a.get(0)) {
        Some(inner) => inner,
        None => v,
    };
    if let Some(r) = v.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    if let Some(c) = v.get("const") {
        return format!("= {c}");
    }
    if let Some(d) = v.get("x-decoded") {
        return format!("bytes: {}", type_of(d));
    }
    match v.get("type") {
        Some(Value::String(t)) if t == "array" => format!("{}[]", type_of(&v["items"])),
        Some(Value::String(t)) if t == "object" && v.get("additionalProperties").is_some() => {
            format!("map<string, {}>", type_of(&v["additionalProperties"]))
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".to_owned(),
    }
}

/// The fields of a schema as a table (one level; nested types are linked
/// by name to the schema list).
fn fields(doc: &Value, schema: &Value) -> String {
    let schema = resolve(doc, schema);
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return String::new();
    };
    let mut out = String::from("<table><tr><th>field</th><th>type</th><th>about</th></tr>");
    for (name, p) in props {
        let about = p.get("description").cloned().unwrap_or(Value::Null);
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
            esc(name),
            esc(&type_of(p)),
            code_spans(about.as_str().unwrap_or_default()),
        );
    }
    out.push_str("</table>");
    out
}

fn operation(doc: &Value, id: &str, op: &Value) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<section id=\"op-{}\"><h3>{}</h3><p class=\"summary\">{}</p>",
        esc(id),
        text(&op["title"]),
        code_spans(op["summary"].as_str().unwrap_or_default())
    );
    out.push_str(&prose(&op["description"]));
    for m in op["messages"].as_array().into_iter().flatten() {
        let m = resolve(doc, resolve(doc, m));
        out.push_str("<h4>Frame</h4>");
        out.push_str(&fields(doc, &m["payload"]));
        if let Some(decoded) = m["payload"]["properties"]["payload"].get("x-decoded") {
            let _ = write!(out, "<h4>payload: {}</h4>", esc(&type_of(decoded)));
            out.push_str(&fields(doc, decoded));
        } else if let Some((field, verb)) = m["payload"]["required"]
            .get(0)
            .and_then(Value::as_str)
            .map(|f| (f, &m["payload"]["properties"][f]))
            .filter(|(_, v)| v.get("$ref").is_some())
        {
            let _ = write!(
                out,
                "<h4><code>{}</code>: {}</h4>",
                esc(field),
                esc(&type_of(verb))
            );
            out.push_str(&fields(doc, verb));
        }
        if let Some(errors) = m.get("x-errors").and_then(Value::as_array) {
            let list: Vec<String> = errors
                .iter()
                .map(|e| format!("<code>{}</code>", text(e)))
                .collect();
            let _ = write!(out, "<p><b>Error codes:</b> {}</p>", list.join(", "));
        }
        if let Some(p) = m.get("x-proto").and_then(Value::as_str) {
            let _ = write!(
                out,
                "<details><summary>.proto</summary><pre>{}</pre></details>",
                esc(p)
            );
        }
    }
    if let Some(replies) = op["reply"]["messages"].as_array() {
        let names: Vec<String> = replies
            .iter()
            .map(|r| {
                format!(
                    "<code>{}</code>",
                    text(&resolve(doc, resolve(doc, r))["title"])
                )
            })
            .collect();
        let _ = write!(
            out,
            "<p><b>Replies:</b> {} (with the request's <code>id</code>)</p>",
            names.join(" or ")
        );
    }
    out.push_str("</section>");
    out
}

/// The page.
pub(crate) fn html(doc: &Value) -> String {
    let mut out = String::new();
    let title = format!(
        "{} {}",
        text(&doc["info"]["title"]),
        text(&doc["info"]["version"])
    );
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} — WebSocket API</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>\
         body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         code,pre{{font:13px ui-monospace,monospace;background:#f4f4f4}}pre{{padding:.5rem;overflow:auto}}\
         table{{border-collapse:collapse;margin:.5rem 0}}td,th{{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}}\
         section{{border-top:1px solid #ccc;margin-top:1.5rem}}.summary{{color:#555;font-style:italic}}nav a{{margin-right:.8rem}}\
         </style></head><body><h1>{title} — WebSocket API</h1>"
    );
    let server = &doc["servers"]["endpoint"];
    let _ = write!(
        out,
        "<p><code>{}://{}{}</code> · AsyncAPI {} (<a href=\"asyncapi.json\">JSON</a>)</p>",
        text(&server["protocol"]),
        text(&server["variables"]["host"]["default"]),
        text(&server["pathname"]),
        text(&doc["asyncapi"]),
    );
    out.push_str("<nav><a href=\"#overview\">Overview</a><a href=\"#handshake\">Handshake and close codes</a>\
                  <a href=\"#requests\">Requests</a><a href=\"#events\">Events</a><a href=\"#routes\">Typed routes</a>\
                  <a href=\"#options\">Options</a></nav>");
    let _ = write!(
        out,
        "<h2 id=\"overview\">Overview</h2>{}",
        prose(&doc["info"]["description"])
    );
    let channel = &doc["channels"]["ws"];
    let _ = write!(
        out,
        "<h2 id=\"handshake\">Handshake and close codes</h2>{}",
        prose(&channel["description"])
    );
    out.push_str("<h4>Request headers</h4>");
    out.push_str(&fields(doc, &channel["bindings"]["ws"]["headers"]));
    let ops = doc["operations"].as_object().cloned().unwrap_or_default();
    for (anchor, heading, kinds) in [
        (
            "requests",
            "Requests (client → server)",
            &["request", "application"][..],
        ),
        ("events", "Events (server → client)", &["event"][..]),
        ("routes", "Typed routes", &["route"][..]),
    ] {
        let _ = write!(out, "<h2 id=\"{anchor}\">{heading}</h2>");
        let mut any = false;
        for (id, op) in &ops {
            let kind = op["x-kind"].as_str().unwrap_or_default();
            let wanted = kinds.contains(&kind)
                && (anchor != "requests" || kind != "application" || op["action"] == "receive")
                && (anchor != "events" || op["action"] == "send");
            if wanted {
                out.push_str(&operation(doc, id, op));
                any = true;
            }
        }
        if anchor == "events" {
            if let Some(op) = ops.get("messageEvent") {
                out.push_str(&operation(doc, "messageEvent", op));
            }
        }
        if !any {
            out.push_str("<p>None on this endpoint.</p>");
        }
    }
    out.push_str("<h2 id=\"options\">Options of this endpoint</h2><table>");
    for (k, v) in doc["info"]["x-options"].as_object().into_iter().flatten() {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
            esc(k),
            esc(&v.to_string())
        );
    }
    out.push_str("</table></body></html>\n");
    out
}
