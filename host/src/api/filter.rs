//! `?filter=`: the common subset of Consul's boolean expression language,
//! evaluated against the JSON each endpoint returns, so that selectors are
//! the field names a client sees (`Service.Tags`, `ServiceMeta.env`,
//! `Checks.Status`). A selector that crosses an array matches if any element
//! does, as in Consul.
//!
//! Supported: `==`, `!=`, `contains`, `not contains`, `in`, `not in`,
//! `is empty`, `is not empty`, `matches`, `not matches`, `and`, `or`,
//! `not`, parentheses; values quoted with `"` or `` ` ``, or bare words.

use serde_json::Value;

/// A parsed filter expression.
#[derive(Debug, Clone)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

/// One comparison.
#[derive(Debug, Clone)]
pub struct Match {
    selector: Vec<String>,
    op: Op,
    value: String,
    regex: Option<regex::Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Equal,
    NotEqual,
    Contains,
    NotContains,
    In,
    NotIn,
    Empty,
    NotEmpty,
    Matches,
    NotMatches,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Eq,
    Ne,
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::LParen);
                i += 1
            }
            ')' => {
                out.push(Token::RParen);
                i += 1
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::Eq);
                i += 2
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::Ne);
                i += 2
            }
            '"' | '`' => {
                let quote = c;
                let mut j = i + 1;
                let mut text = String::new();
                while j < chars.len() && chars[j] != quote {
                    if chars[j] == '\\' && quote == '"' && j + 1 < chars.len() {
                        j += 1;
                    }
                    text.push(chars[j]);
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(format!("unterminated string starting at position {i}"));
                }
                out.push(Token::Quoted(text));
                i = j + 1;
            }
            _ => {
                let mut j = i;
                while j < chars.len() && !chars[j].is_whitespace() && !"()\"`=!".contains(chars[j])
                {
                    j += 1;
                }
                if j == i {
                    return Err(format!("unexpected character '{c}' at position {i}"));
                }
                out.push(Token::Word(chars[i..j].iter().collect()));
                i = j;
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Word(x)) if x == w)
    }
    fn peek_word_at(&self, offset: usize, w: &str) -> bool {
        matches!(self.tokens.get(self.pos + offset), Some(Token::Word(x)) if x == w)
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.tokens.get(self.pos) == Some(&Token::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.next() != Some(Token::RParen) {
                return Err("missing closing parenthesis".into());
            }
            return Ok(e);
        }
        self.matcher()
    }

    fn value(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Quoted(s)) | Some(Token::Word(s)) => Ok(s),
            other => Err(format!("expected a value, found {other:?}")),
        }
    }

    fn matcher(&mut self) -> Result<Expr, String> {
        // `"value" in Selector` / `"value" not in Selector`
        if self.peek_word_at(1, "in") || (self.peek_word_at(1, "not") && self.peek_word_at(2, "in"))
        {
            let value = self.value()?;
            let op = if self.peek_word("not") {
                self.pos += 2;
                Op::NotIn
            } else {
                self.pos += 1;
                Op::In
            };
            let selector = self.selector()?;
            return Ok(Expr::Match(Match {
                selector,
                op,
                value,
                regex: None,
            }));
        }
        let selector = self.selector()?;
        let op = match self.next() {
            Some(Token::Eq) => Op::Equal,
            Some(Token::Ne) => Op::NotEqual,
            Some(Token::Word(w)) => match w.as_str() {
                "contains" => Op::Contains,
                "matches" => Op::Matches,
                "is" => {
                    if self.peek_word("not") {
                        self.pos += 1;
                        if !self.peek_word("empty") {
                            return Err("expected 'empty' after 'is not'".into());
                        }
                        self.pos += 1;
                        Op::NotEmpty
                    } else if self.peek_word("empty") {
                        self.pos += 1;
                        Op::Empty
                    } else {
                        return Err("expected 'empty' after 'is'".into());
                    }
                }
                "not" => match self.next() {
                    Some(Token::Word(w)) if w == "contains" => Op::NotContains,
                    Some(Token::Word(w)) if w == "matches" => Op::NotMatches,
                    _ => return Err("expected 'contains' or 'matches' after 'not'".into()),
                },
                other => return Err(format!("unknown operator '{other}'")),
            },
            other => return Err(format!("expected an operator, found {other:?}")),
        };
        let value = match op {
            Op::Empty | Op::NotEmpty => String::new(),
            _ => self.value()?,
        };
        let regex = match op {
            Op::Matches | Op::NotMatches => Some(
                regex::Regex::new(&value)
                    .map_err(|e| format!("invalid regular expression: {e}"))?,
            ),
            _ => None,
        };
        Ok(Expr::Match(Match {
            selector,
            op,
            value,
            regex,
        }))
    }

    fn selector(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w.split('.').map(str::to_string).collect()),
            other => Err(format!("expected a selector, found {other:?}")),
        }
    }
}

/// Parses a filter expression; the error says where it went wrong.
pub fn parse(s: &str) -> Result<Expr, String> {
    let mut p = Parser {
        tokens: tokenize(s)?,
        pos: 0,
    };
    let e = p.or()?;
    if p.pos < p.tokens.len() {
        return Err(format!("unexpected {:?}", p.tokens[p.pos]));
    }
    Ok(e)
}

/// Every value the selector reaches, flattening arrays on the way.
fn resolve<'a>(v: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    match path.split_first() {
        None => out.push(v),
        Some((head, rest)) => match v {
            Value::Object(m) => {
                if let Some(child) = m.get(head) {
                    resolve(child, rest, out)
                }
            }
            Value::Array(items) => {
                for item in items {
                    resolve(item, path, out)
                }
            }
            _ => {}
        },
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn contains(v: &Value, needle: &str) -> bool {
    match v {
        Value::Array(a) => a.iter().any(|x| as_text(x) == needle),
        Value::Object(m) => m.contains_key(needle),
        Value::String(s) => s.contains(needle),
        _ => false,
    }
}

impl Match {
    fn eval(&self, item: &Value) -> bool {
        // Selectors ending at an array (Tags) are collections for
        // contains/in/empty; for ==, any element may match.
        let mut found = Vec::new();
        resolve(item, &self.selector, &mut found);
        let any = |f: &dyn Fn(&Value) -> bool| found.iter().any(|v| f(v));
        match self.op {
            Op::Equal => any(&|v| as_text(v) == self.value),
            Op::NotEqual => !any(&|v| as_text(v) == self.value),
            Op::Contains | Op::In => any(&|v| contains(v, &self.value)),
            Op::NotContains | Op::NotIn => !any(&|v| contains(v, &self.value)),
            Op::Empty => found.is_empty() || found.iter().all(|v| is_empty(v)),
            Op::NotEmpty => any(&|v| !is_empty(v)),
            Op::Matches => any(&|v| self.regex.as_ref().is_some_and(|r| r.is_match(&as_text(v)))),
            Op::NotMatches => {
                !any(&|v| self.regex.as_ref().is_some_and(|r| r.is_match(&as_text(v))))
            }
        }
    }
}

impl Expr {
    /// Whether `item` satisfies the expression.
    pub fn eval(&self, item: &Value) -> bool {
        match self {
            Expr::And(a, b) => a.eval(item) && b.eval(item),
            Expr::Or(a, b) => a.eval(item) || b.eval(item),
            Expr::Not(e) => !e.eval(item),
            Expr::Match(m) => m.eval(item),
        }
    }
}

/// Filters a response: the elements of an array, or the values of a map
/// (as `/v1/agent/services` returns).
pub fn apply(expr: &Expr, body: &mut Value) {
    match body {
        Value::Array(items) => items.retain(|i| expr.eval(i)),
        Value::Object(map) => map.retain(|_, v| expr.eval(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_like_consul() {
        let rows = json!([
            {"ServiceName": "web", "ServiceTags": ["v1", "prod"], "ServiceMeta": {"env": "prod"},
             "Checks": [{"Status": "passing"}]},
            {"ServiceName": "web", "ServiceTags": ["v2"], "ServiceMeta": {"env": "dev"},
             "Checks": [{"Status": "critical"}]}
        ]);
        let count = |f: &str| {
            let mut v = rows.clone();
            apply(&parse(f).unwrap(), &mut v);
            v.as_array().unwrap().len()
        };
        assert_eq!(count(r#"ServiceMeta.env == "prod""#), 1);
        assert_eq!(count(r#""v2" in ServiceTags"#), 1);
        assert_eq!(
            count(r#"ServiceTags contains "v1" or ServiceMeta.env == dev"#),
            2
        );
        assert_eq!(count(r#"not (Checks.Status == "critical")"#), 1);
        assert_eq!(
            count(r#"ServiceName matches "^w.b$" and ServiceTags is not empty"#),
            2
        );
        assert!(parse("ServiceName ===").is_err());
    }
}
