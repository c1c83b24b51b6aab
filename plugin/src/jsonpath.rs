//! `-o jsonpath=TEMPLATE`: kubectl's JSONPath templates. No maintained crate implements kubectl's
//! template syntax, so this is the thin layer over `jsonpath-rust` (RFC 9535 JSONPath, already in
//! the build through kube): literal text, `{EXPR}`, `{"quoted text"}` and `{range EXPR}...{end}`.
//! kubectl's expressions (`.items[*].metadata.name`, `..name`, `[?(@.x=="y")]`) are turned into
//! RFC 9535 queries (`$['items'][*]['metadata']['name']`) when the template is parsed, so a bad
//! template is refused before anything is asked of the cluster.

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Literal text, outside braces or `{"quoted"}`.
    Text(String),
    /// `{EXPR}`: the results, separated by spaces.
    Expr(Query),
    /// `{range EXPR}...{end}`: the body once per result.
    Range(Query, Vec<Node>),
}

/// One expression: the RFC 9535 query, and whether it starts at the document (`$`) rather than
/// at the current item (`.` or `@`, the document itself outside a range).
#[derive(Debug, Clone, PartialEq)]
struct Query {
    path: JpQuery,
    from_root: bool,
}

impl Template {
    /// Parses `text`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Template, String> {
        let bad = |problem: String| format!("jsonpath template {text:?}: {problem}");
        let mut stack: Vec<(Query, Vec<Node>)> = Vec::new();
        let mut nodes = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                nodes.push(Node::Text(rest.to_string()));
                break;
            };
            if open > 0 {
                nodes.push(Node::Text(rest[..open].to_string()));
            }
            let close = action_end(&rest[open..])
                .ok_or_else(|| bad(format!("unclosed action {:?}: no closing '}}'", &rest[open..])))?;
            let action = rest[open + 1..open + close].trim();
            rest = &rest[open + close + 1..];
            if action == "end" {
                let (query, outer) = stack.pop().ok_or_else(|| bad("{end} without a {range}".into()))?;
                let body = std::mem::replace(&mut nodes, outer);
                nodes.push(Node::Range(query, body));
            } else if let Some(expr) = action.strip_prefix("range ") {
                let query = Query::parse(expr.trim()).map_err(bad)?;
                stack.push((query, std::mem::take(&mut nodes)));
            } else if action.starts_with('"') {
                nodes.push(Node::Text(unquote(action).map_err(bad)?));
            } else {
                nodes.push(Node::Expr(Query::parse(action).map_err(bad)?));
            }
        }
        if !stack.is_empty() {
            return Err(bad("{range} without an {end}".into()));
        }
        Ok(Template { nodes })
    }

    /// The template applied to `doc`, as `-o jsonpath=` prints it: strings as they are, other
    /// values as compact JSON, the results of one expression separated by spaces.
    pub fn render(&self, doc: &Value) -> String {
        let mut out = String::new();
        render(&self.nodes, doc, doc, &mut out);
        out
    }

    /// Every expression's results in order, as `-o jsonpath-as-json=` prints them (literal text is
    /// left out).
    pub fn values(&self, doc: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        values(&self.nodes, doc, doc, &mut out);
        out
    }
}

/// The length of the action that starts `text` (at its `{`), up to its `}`; quotes may hold braces.
fn action_end(text: &str) -> Option<usize> {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '}') => return Some(i),
            (None, _) => {}
        }
    }
    None
}

/// `"text\n"` -> the text, with `\n`, `\t`, `\r`, `\"` and `\\` unescaped.
fn unquote(action: &str) -> Result<String, String> {
    let inner = action
        .strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .filter(|_| action.len() >= 2)
        .ok_or_else(|| format!("unterminated string {action}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(c @ ('"' | '\\')) => out.push(c),
            other => {
                return Err(format!("unknown escape \\{} in {action}", other.map(String::from).unwrap_or_default()));
            }
        }
    }
    Ok(out)
}

impl Query {
    fn parse(expr: &str) -> Result<Query, String> {
        let (from_root, path) = match expr.as_bytes().first() {
            Some(b'$') => (true, &expr[1..]),
            Some(b'@') => (false, &expr[1..]),
            Some(b'.' | b'[') => (false, expr),
            None => return Err("an empty expression {}".into()),
            Some(_) => {
                return Err(format!(
                    "{expr:?} is neither text in quotes nor a path starting with '.', '[', '$' or '@'"
                ));
            }
        };
        let rfc = to_rfc9535(path).map_err(|e| format!("{expr:?}: {e}"))?;
        let path = parse_json_path(&rfc)
            .map_err(|e| format!("{expr:?} is not a JSONPath expression: {}", first_line(&e.to_string())))?;
        Ok(Query { path, from_root })
    }

    fn results<'a>(&self, root: &'a Value, current: &'a Value) -> Vec<&'a Value> {
        let on = if self.from_root { root } else { current };
        jsonpath_rust::query::js_path_process(&self.path, on)
            .map(|refs| refs.into_iter().map(|r| r.val()).collect())
            .unwrap_or_default()
    }

    /// What a range iterates: the results, or the items of the one array it found (`{range .items}`).
    fn items<'a>(&self, root: &'a Value, current: &'a Value) -> Vec<&'a Value> {
        match self.results(root, current).as_slice() {
            [Value::Array(items)] => items.iter().collect(),
            results => results.to_vec(),
        }
    }
}

fn first_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// kubectl's path (after `$` or `@`) as an RFC 9535 query: `.name` -> `['name']` (so names may
/// hold `-`, or `\.` for a dot), `.*` -> `[*]`, `..name` -> `..['name']`, brackets as they are.
fn to_rfc9535(path: &str) -> Result<String, String> {
    let mut out = String::from("$");
    let chars: Vec<char> = path.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                if chars.get(i) == Some(&'.') {
                    out.push_str("..");
                    i += 1;
                    if chars.get(i) == Some(&'[') {
                        continue;
                    }
                }
                if chars.get(i) == Some(&'*') {
                    out.push_str("[*]");
                    i += 1;
                    continue;
                }
                let mut name = String::new();
                while let Some(&c) = chars.get(i) {
                    match c {
                        '\\' if chars.get(i + 1) == Some(&'.') => {
                            name.push('.');
                            i += 2;
                        }
                        '.' | '[' => break,
                        c => {
                            name.push(c);
                            i += 1;
                        }
                    }
                }
                if name.is_empty() {
                    // A trailing dot (`{.}`, `{.items.}`) stands for what it follows.
                    if i < chars.len() || out.ends_with("..") {
                        return Err("a '.' with no field name after it".into());
                    }
                    continue;
                }
                out.push_str(&format!("['{}']", name.replace('\\', "\\\\").replace('\'', "\\'")));
            }
            '[' => {
                let start = i;
                let mut depth = 0;
                let mut quote = None;
                loop {
                    let Some(&c) = chars.get(i) else { return Err("an unclosed '['".into()) };
                    match (quote, c) {
                        (Some(_), '\\') => i += 1,
                        (Some(q), c) if c == q => quote = None,
                        (Some(_), _) => {}
                        (None, '\'' | '"') => quote = Some(c),
                        (None, '[') => depth += 1,
                        (None, ']') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        (None, _) => {}
                    }
                    i += 1;
                }
                out.extend(&chars[start..=i]);
                i += 1;
            }
            c => return Err(format!("unexpected {c:?}: fields follow '.', indexes and filters are in '[...]'")),
        }
    }
    Ok(out)
}

fn render(nodes: &[Node], root: &Value, current: &Value, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Expr(q) => {
                let texts: Vec<String> = q.results(root, current).into_iter().map(text).collect();
                out.push_str(&texts.join(" "));
            }
            Node::Range(q, body) => {
                for item in q.items(root, current) {
                    render(body, root, item, out);
                }
            }
        }
    }
}

fn values(nodes: &[Node], root: &Value, current: &Value, out: &mut Vec<Value>) {
    for node in nodes {
        match node {
            Node::Text(_) => {}
            Node::Expr(q) => out.extend(q.results(root, current).into_iter().cloned()),
            Node::Range(q, body) => {
                for item in q.items(root, current) {
                    values(body, root, item, out);
                }
            }
        }
    }
}

/// A result as kubectl prints it: a string as it is, null as nothing, the rest as compact JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> Value {
        json!({
            "apiVersion": "kubectl-backup.dev/v1alpha1",
            "kind": "BackupScheduleList",
            "items": [
                {"metadata": {"name": "nightly", "labels": {"app-name": "shop", "a.b/c": "x"}},
                 "spec": {"schedule": "@daily", "ttl": "720h", "includedNamespaces": ["shop", "web"]}},
                {"metadata": {"name": "hourly"}, "spec": {"schedule": "@hourly", "paused": true}}
            ]
        })
    }

    fn render(template: &str) -> String {
        Template::parse(template).unwrap().render(&list())
    }

    #[test]
    fn expressions_print_their_results_separated_by_spaces() {
        assert_eq!(render("{.items[*].metadata.name}"), "nightly hourly");
        assert_eq!(render("{$.items[*].metadata.name}"), "nightly hourly");
        assert_eq!(render("{.kind}"), "BackupScheduleList");
        assert_eq!(render("{.items[0].spec.includedNamespaces}"), r#"["shop","web"]"#);
        assert_eq!(render("{.items[-1:].spec.paused}"), "true");
        assert_eq!(render("{.items[1].spec.ttl}"), "", "a missing field prints nothing, as kubectl's default");
        assert_eq!(render("{..schedule}"), "@daily @hourly");
        assert_eq!(render("{.items[*]['metadata.name']}"), "", "a bracketed name is one key");
    }

    #[test]
    fn text_quoted_strings_and_names_kubectl_allows() {
        assert_eq!(render("kind: {.kind}\n"), "kind: BackupScheduleList\n");
        assert_eq!(render(r#"{.items[0].metadata.name}{"\t"}{.items[1].metadata.name}{"\n"}"#), "nightly\thourly\n");
        assert_eq!(render("{.items[0].metadata.labels.app-name}"), "shop");
        assert_eq!(render(r"{.items[0].metadata.labels.a\.b/c}"), "x");
        assert_eq!(render(r#"{"{braces} in \"quotes\""}"#), r#"{braces} in "quotes""#);
    }

    #[test]
    fn range_repeats_its_body_for_each_item() {
        assert_eq!(render(r#"{range .items[*]}{.metadata.name}{"\n"}{end}"#), "nightly\nhourly\n");
        assert_eq!(
            render("{range .items}[{.metadata.name},{.spec.schedule}] {end}"),
            "[nightly,@daily] [hourly,@hourly] "
        );
        assert_eq!(
            render(r#"{range .items[*]}{.metadata.name}:{range .spec.includedNamespaces[*]} {@}{end};{end}"#),
            "nightly: shop web;hourly:;"
        );
        assert_eq!(
            render(r#"{range .items[*]}{.metadata.name}/{$.kind} {end}"#),
            "nightly/BackupScheduleList hourly/BackupScheduleList "
        );
    }

    #[test]
    fn filters_select_items() {
        assert_eq!(render(r#"{.items[?(@.spec.schedule=="@hourly")].metadata.name}"#), "hourly");
        assert_eq!(render("{.items[?(@.spec.paused)].metadata.name}"), "hourly");
    }

    #[test]
    fn values_collect_every_result_for_jsonpath_as_json() {
        let t = Template::parse(r#"{range .items[*]}{.metadata.name}{"\n"}{end}"#).unwrap();
        assert_eq!(t.values(&list()), vec![json!("nightly"), json!("hourly")]);
    }

    #[test]
    fn bad_templates_name_the_template_and_the_problem() {
        let err = |t: &str| Template::parse(t).unwrap_err();
        for (template, problem) in [
            ("{.items[*].metadata.name", "unclosed action"),
            ("{.items[0}", "unclosed '['"),
            ("{range .items[*]}{.metadata.name}", "{range} without an {end}"),
            ("{.kind}{end}", "{end} without a {range}"),
            ("{}", "empty expression"),
            ("{items}", "neither text in quotes nor a path"),
            ("{.items[?(@.x ==)]}", "is not a JSONPath expression"),
            (r#"{"\q"}"#, "unknown escape"),
            ("{.items..}", "no field name"),
        ] {
            let e = err(template);
            assert!(e.contains(&format!("{template:?}")) && e.contains(problem), "{template}: {e}");
        }
    }
}
