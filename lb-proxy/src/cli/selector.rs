//! Label selectors as `kubectl get -l` reads them: a port of
//! k8s.io/apimachinery `labels.Parse` (its lexer, its grammar and its error
//! wording), so a selector that works with kubectl works with `lb-proxy get`
//! and a broken one is refused with the same message.
//!
//! ```text
//! <selector>    ::= <requirement> | <requirement> "," <selector>
//! <requirement> ::= [!] KEY [ ("in" | "notin") "(" VALUES ")" | ("=" | "==" | "!=" | ">" | "<") VALUE ]
//! ```
//!
//! Keys and values are not checked against Kubernetes' label syntax: a
//! selector naming a label no object can carry simply matches nothing.

use std::collections::BTreeMap;

/// A parsed label selector: every requirement must hold (an empty selector
/// matches everything, as in Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement of a [`Selector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// What the label must be.
    pub operator: Operator,
}

/// Kubernetes' `selection.Operator`, with its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// `key` : the label is set.
    Exists,
    /// `!key`: the label is not set.
    DoesNotExist,
    /// `key=v`, `key==v`: the label is set to `v`.
    Equals(String),
    /// `key!=v`: the label is not set, or set to something else.
    NotEquals(String),
    /// `key in (a,b)`: the label is set to one of them.
    In(Vec<String>),
    /// `key notin (a,b)`: the label is not set, or set to none of them.
    NotIn(Vec<String>),
    /// `key>n`: the label is an integer greater than `n`.
    GreaterThan(i64),
    /// `key<n`: the label is an integer less than `n`.
    LessThan(i64),
}

/// A selector that does not parse; the message is apimachinery's
/// (`unable to parse requirement: found '', expected: '('`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(String);

impl Selector {
    /// Parses `text` as `kubectl -l` does.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let tokens = lex(text);
        Parser {
            tokens: &tokens,
            position: 0,
        }
        .parse()
        .map(|mut requirements| {
            requirements.sort_by(|a, b| a.key.cmp(&b.key));
            Selector { requirements }
        })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl Requirement {
    /// Whether `labels` satisfy this requirement (apimachinery's
    /// `Requirement.Matches`).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Equals(v) => value == Some(v),
            Operator::NotEquals(v) => value != Some(v),
            Operator::In(vs) => value.is_some_and(|v| vs.contains(v)),
            Operator::NotIn(vs) => !value.is_some_and(|v| vs.contains(v)),
            Operator::GreaterThan(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Operator::LessThan(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// apimachinery's `string2token`.
fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// The whole input as tokens, ending with [`Token::End`] (apimachinery's
/// `Lexer` run by `Parser.scan`). Works on bytes, as Go's does; identifiers
/// end only at ASCII specials or whitespace, so they stay valid UTF-8.
fn lex(s: &str) -> Vec<(Token, String)> {
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            out.push((Token::End, String::new()));
            return out;
        }
        if is_special(bytes[pos]) {
            // The longest run of specials that is a token, as
            // `scanSpecialSymbol`.
            let start = pos;
            let mut last: Option<(Token, usize)> = None;
            while pos < bytes.len() && is_special(bytes[pos]) {
                let candidate = &s[start..=pos];
                if let Some(t) = keyword(candidate) {
                    last = Some((t, pos + 1));
                } else if last.is_some() {
                    break;
                }
                pos += 1;
            }
            match last {
                Some((t, end)) => {
                    out.push((t, s[start..end].to_string()));
                    pos = end;
                }
                None => out.push((
                    Token::Error,
                    format!("error expected: keyword found '{}'", &s[start..pos]),
                )),
            }
        } else {
            let start = pos;
            while pos < bytes.len() && !is_special(bytes[pos]) && !is_whitespace(bytes[pos]) {
                pos += 1;
            }
            let word = &s[start..pos];
            out.push((keyword(word).unwrap_or(Token::Identifier), word.to_string()));
        }
    }
}

/// `in` and `notin` are identifiers where a value is expected
/// (`x in (in)`): apimachinery's `ParserContext`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser<'a> {
    tokens: &'a [(Token, String)],
    position: usize,
}

fn err(message: String) -> SelectorError {
    SelectorError(message)
}

impl Parser<'_> {
    fn lookahead(&self, context: Context) -> (Token, &str) {
        // The lexer always ends with `End`, and the parser never reads past it.
        let (t, lit) = &self.tokens[self.position.min(self.tokens.len() - 1)];
        (Self::in_context(*t, context), lit)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let (t, lit) = self.lookahead(context);
        let lit = lit.to_string();
        if self.position < self.tokens.len() - 1 {
            self.position += 1;
        }
        (t, lit)
    }

    fn in_context(t: Token, context: Context) -> Token {
        match (context, t) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            _ => t,
        }
    }

    fn parse(mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (t, lit) = self.lookahead(Context::Values);
            match t {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .requirement()
                        .map_err(|e| err(format!("unable to parse requirement: {}", e.0)))?;
                    requirements.push(r);
                    let (t, lit) = self.consume(Context::Values);
                    match t {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let (t2, lit2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(err(format!(
                                    "found '{lit2}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(err(format!(
                                "found '{lit}', expected: ',' or 'end of string'"
                            )))
                        }
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, unary) = self.key_and_inferred_operator()?;
        if let Some(operator) = unary {
            return Ok(Requirement { key, operator });
        }
        let (t, lit) = self.consume(Context::KeyAndOperator);
        let operator = match t {
            Token::In => Operator::In(self.values()?),
            Token::NotIn => Operator::NotIn(self.values()?),
            Token::Equals | Token::DoubleEquals => Operator::Equals(self.exact_value()?),
            Token::NotEquals => Operator::NotEquals(self.exact_value()?),
            Token::GreaterThan => Operator::GreaterThan(integer(&self.exact_value()?)?),
            Token::LessThan => Operator::LessThan(integer(&self.exact_value()?)?),
            _ => {
                return Err(err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                )))
            }
        };
        Ok(Requirement { key, operator })
    }

    /// The key, and `Exists`/`DoesNotExist` when no binary operator follows.
    fn key_and_inferred_operator(&mut self) -> Result<(String, Option<Operator>), SelectorError> {
        let (mut t, mut lit) = self.consume(Context::Values);
        let negated = t == Token::DoesNotExist;
        if negated {
            (t, lit) = self.consume(Context::Values);
        }
        if t != Token::Identifier {
            return Err(err(format!("found '{lit}', expected: identifier")));
        }
        let (next, _) = self.lookahead(Context::Values);
        let unary = if negated {
            Some(Operator::DoesNotExist)
        } else if matches!(next, Token::End | Token::Comma) {
            Some(Operator::Exists)
        } else {
            None
        };
        Ok((lit, unary))
    }

    fn values(&mut self) -> Result<Vec<String>, SelectorError> {
        let (t, lit) = self.consume(Context::Values);
        if t != Token::OpenPar {
            return Err(err(format!("found '{lit}' expected: '('")));
        }
        let (t, lit) = self.lookahead(Context::Values);
        let lit = lit.to_string();
        match t {
            Token::Identifier | Token::Comma => {
                let values = self.identifiers()?;
                let (t, _) = self.consume(Context::Values);
                if t != Token::ClosedPar {
                    return Err(err(format!("found '{lit}', expected: ')'")));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(err(format!(
                "found '{lit}', expected: ',', ')' or identifier"
            ))),
        }
    }

    fn identifiers(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut values: Vec<String> = Vec::new();
        let insert = |values: &mut Vec<String>, v: String| {
            if !values.contains(&v) {
                values.push(v);
            }
        };
        loop {
            let (t, lit) = self.consume(Context::Values);
            match t {
                Token::Identifier => {
                    insert(&mut values, lit);
                    let (t2, lit2) = self.lookahead(Context::Values);
                    match t2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(err(format!("found '{lit2}', expected: ',' or ')'"))),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        insert(&mut values, String::new());
                    }
                    let (t2, _) = self.lookahead(Context::Values);
                    if t2 == Token::ClosedPar {
                        insert(&mut values, String::new());
                        return Ok(values);
                    }
                    if t2 == Token::Comma {
                        self.consume(Context::Values);
                        insert(&mut values, String::new());
                    }
                }
                _ => return Err(err(format!("found '{lit}', expected: ',', or identifier"))),
            }
        }
    }

    fn exact_value(&mut self) -> Result<String, SelectorError> {
        let (t, _) = self.lookahead(Context::Values);
        if matches!(t, Token::End | Token::Comma) {
            return Ok(String::new());
        }
        let (t, lit) = self.consume(Context::Values);
        if t == Token::Identifier {
            Ok(lit)
        } else {
            Err(err(format!("found '{lit}', expected: identifier")))
        }
    }
}

/// The value of `>`/`<`, which Kubernetes requires to be an integer
/// (`NewRequirement`'s message).
fn integer(value: &str) -> Result<i64, SelectorError> {
    value.parse().map_err(|_| {
        err(format!(
            "values[0]: Invalid value: \"{value}\": for 'Gt', 'Lt' operators, the value must be an integer"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn matches(selector: &str, pairs: &[(&str, &str)]) -> bool {
        Selector::parse(selector)
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .matches(&labels(pairs))
    }

    #[test]
    fn equality_and_inequality_compare_one_label() {
        assert!(matches("app=web", &[("app", "web")]));
        assert!(matches("app==web", &[("app", "web"), ("tier", "front")]));
        assert!(!matches("app=web", &[("app", "db")]));
        assert!(!matches("app=web", &[]));
        assert!(matches("app!=web", &[("app", "db")]));
        assert!(matches("app!=web", &[]), "a missing label is not web");
        assert!(!matches("app!=web", &[("app", "web")]));
    }

    #[test]
    fn set_based_requirements_are_kubernetes_ones() {
        assert!(matches("env in (prod, qa)", &[("env", "qa")]));
        assert!(!matches("env in (prod,qa)", &[("env", "dev")]));
        assert!(!matches("env in (prod)", &[]));
        assert!(matches("env notin (prod)", &[("env", "qa")]));
        assert!(matches("env notin (prod)", &[]));
        assert!(!matches("env notin (prod)", &[("env", "prod")]));
        // `in` and `notin` are values where a value is expected.
        assert!(matches("x in (in,notin)", &[("x", "notin")]));
    }

    #[test]
    fn existence_and_absence_need_only_the_key() {
        assert!(matches("app", &[("app", "")]));
        assert!(!matches("app", &[]));
        assert!(matches("!canary", &[("app", "web")]));
        assert!(!matches("!canary", &[("canary", "true")]));
        assert!(matches(
            "app,!canary,tier notin (db)",
            &[("app", "x"), ("tier", "front")]
        ));
    }

    #[test]
    fn an_empty_selector_matches_everything() {
        assert!(matches("", &[]));
        assert!(matches("  ", &[("a", "b")]));
    }

    #[test]
    fn greater_and_less_than_compare_integers() {
        assert!(matches("gen>2", &[("gen", "3")]));
        assert!(!matches("gen>2", &[("gen", "two")]));
        assert!(matches("gen<2", &[("gen", "1")]));
        assert_eq!(
            Selector::parse("gen>x").unwrap_err().to_string(),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
    }

    #[test]
    fn a_broken_selector_is_refused_in_apimachinery_words() {
        for (selector, message) in [
            (
                "env IN (a)",
                "unable to parse requirement: found 'IN', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "x in",
                "unable to parse requirement: found '' expected: '('",
            ),
            ("a=b,", "found '', expected: identifier after ','"),
            (
                "=a",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            (
                "a in (b c)",
                "unable to parse requirement: found 'c', expected: ',' or ')'",
            ),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ] {
            assert_eq!(
                Selector::parse(selector).map_err(|e| e.to_string()),
                Err(message.to_string()),
                "{selector}"
            );
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "[a-z!=(),<> \\t-]{0,40}") {
            let _ = Selector::parse(&text);
        }

        #[test]
        fn parsing_arbitrary_unicode_never_panics(text in "\\PC{0,40}") {
            let _ = Selector::parse(&text);
        }

        #[test]
        fn an_equality_selector_matches_its_own_label(
            key in "[a-z][a-z0-9.-]{0,20}",
            value in "[a-zA-Z0-9_.-]{0,20}",
        ) {
            let selector = Selector::parse(&format!("{key}={value}")).expect("parses");
            prop_assert!(selector.matches(&labels(&[(key.as_str(), value.as_str())])));
        }
    }
}
