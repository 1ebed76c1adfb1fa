//! A nesting limit checked before the YAML parser runs.
//!
//! The YAML parser's time grows with the square of the nesting of flow
//! collections (200 KB of `[[[[...` took 37 s to reject), and no Kubernetes
//! object nests anywhere near [`MAX_DEPTH`] deep. One linear pass over the
//! text finds the deepest nesting, so a hostile or broken file is refused
//! at once with its line, before the parser sees it.

/// The deepest nesting of collections a manifest may have (flow `[`/`{`
/// plus block indentation levels).
pub const MAX_DEPTH: usize = 64;

/// The first line (1-based) where the nesting of `text` goes deeper than
/// [`MAX_DEPTH`], if any.
///
/// Flow collections are counted exactly (brackets outside quotes and
/// comments); block collections by the stack of indentation levels, each
/// `- ` sequence marker at the start of a line opening one more level. A
/// multi-line scalar (`|`, `>`) is deeper-indented text, not nesting, so
/// lines inside one are skipped.
pub fn too_deep(text: &str) -> Option<usize> {
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    let mut block_scalar: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = &line[indent..];
        if let Some(parent) = block_scalar {
            if body.is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        if flow == 0 && !body.is_empty() && !body.starts_with('#') {
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            // `- - - x`: each marker is one more sequence level.
            let mut rest = body;
            while let Some(after) = rest.strip_prefix("- ") {
                indents.push(indent + (body.len() - after.len()));
                rest = after.trim_start_matches(' ');
            }
            if indents.len() > MAX_DEPTH {
                return Some(n + 1);
            }
        }
        let (depth, deepest, opens_block_scalar) = scan_flow(body, flow);
        flow = depth;
        if deepest + indents.len() > MAX_DEPTH {
            return Some(n + 1);
        }
        if opens_block_scalar && flow == 0 {
            block_scalar = Some(indent);
        }
    }
    None
}

/// The flow depth after `line`, starting at `depth`; the deepest it went on
/// the line; and whether the line ends with a block scalar indicator (`|`,
/// `>`, with optional modifiers).
fn scan_flow(line: &str, mut depth: usize) -> (usize, usize, bool) {
    let mut deepest = depth;
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    let mut last_token_start = 0;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if c == q && !(q == '"' && prev == '\\') {
                    quote = None;
                }
            }
            None => match c {
                '#' if prev == ' ' || prev == '\t' || i == 0 => {
                    return (depth, deepest, false);
                }
                '"' | '\'' if prev == ' ' || "[{,:".contains(prev) || i == 0 => quote = Some(c),
                // Outside a flow collection a bracket opens one only where a
                // value starts (`key: [`, `- {`); `x[1]` is a plain scalar.
                '[' | '{' if depth > 0 || i == 0 || prev == ' ' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                ' ' => last_token_start = i + 1,
                _ => {}
            },
        }
        prev = c;
    }
    let last = line[last_token_start.min(line.len())..].trim_end();
    let block = quote.is_none()
        && depth == 0
        && (last.starts_with('|') || last.starts_with('>'))
        && last[1..]
            .chars()
            .all(|c| c == '-' || c == '+' || c.is_ascii_digit());
    (depth, deepest, block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_found_on_its_line() {
        let text = format!("a: 1\nb: {}1{}\n", "[".repeat(65), "]".repeat(65));
        assert_eq!(too_deep(&text), Some(2));
        let ok = format!("b: {}1{}\n", "[".repeat(60), "]".repeat(60));
        assert_eq!(too_deep(&ok), None);
    }

    #[test]
    fn deep_block_nesting_is_found() {
        let mut text = String::new();
        for i in 0..70 {
            text.push_str(&" ".repeat(i));
            text.push_str(&format!("k{i}:\n"));
        }
        assert!(too_deep(&text).is_some());
        let dashes = format!("{}x\n", "- ".repeat(70));
        assert!(too_deep(&dashes).is_some());
    }

    #[test]
    fn brackets_in_strings_comments_block_scalars_and_plain_scalars_do_not_count() {
        let text = format!(
            "a: \"{0}\"\nb: '{0}'\n# {0}\nc: |\n  {0}\n  more\nd: x{0}\n",
            "[".repeat(100)
        );
        assert_eq!(too_deep(&text), None);
    }

    #[test]
    fn a_real_manifest_is_shallow() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n  selector:\n    app: web\n";
        assert_eq!(too_deep(text), None);
    }
}
