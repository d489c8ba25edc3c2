//! Alarm conditions: a small expression language over one device's points, such as
//! `run_state == 1 && current_l1 < 0.5`. An alarm fires while its condition is true.
//!
//! A condition is compiled once at config load ([`Expr::compile`]): point names are resolved to
//! point indices there, and every mistake the engineer can make is reported then, with a byte
//! position, rather than at 3 a.m. at poll time. [`Expr::eval`] then runs a flat postfix program
//! over a fixed-size stack array, so evaluating never allocates.
//!
//! It is hand-rolled rather than built on a general evaluator because names must become point
//! indices at load time (with errors the config loader can attach to its key) and evaluation
//! must stay allocation-free at well over a million rows per second.
//!
//! # Grammar
//!
//! Lowest precedence first; whitespace (spaces, tabs, newlines) is allowed between tokens.
//!
//! ```text
//! condition = or ;
//! or        = and { "||" and } ;
//! and       = cmp { "&&" cmp } ;
//! cmp       = sum [ ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) sum ] ;   (non-associative)
//! sum       = product { ( "+" | "-" ) product } ;
//! product   = unary { ( "*" | "/" | "%" ) unary } ;
//! unary     = ( "!" | "-" ) unary | primary ;
//! primary   = number | "true" | "false" | name
//!           | "abs" "(" or ")" | ( "min" | "max" ) "(" or "," or ")"
//!           | "(" or ")" ;
//! number    = ( digits [ "." [ digits ] ] | "." digits )
//!             [ ( "e" | "E" ) [ "+" | "-" ] digits ] ;      (finite; a sign is unary `-`)
//! name      = [a-z_] [a-z0-9_-]*                                         (a bare name)
//!           | "`" any characters but a backtick "`" ;                    (a quoted name)
//! ```
//!
//! * A bare name may contain `-`, so `current-l1` is one name and subtraction needs spaces
//!   (`a - b`). Names starting with a digit, or any other name (even `true` or `and`), can be
//!   quoted: `` `1st_stage` ``. `abs`, `min` and `max` are functions only when followed by `(`.
//! * `a < b < c` is an error (write `a < b && b < c`). `=`, `&`, `|`, `and`, `or`, `not`, `=>`,
//!   `=<` and `<>` are errors that say what to write instead.
//! * Nesting (parentheses, unary operators, function calls) and the evaluation stack are both
//!   limited to 64 levels ("expression too deeply nested").
//!
//! # Types
//!
//! Every sub-expression is a *number* (f64) or a *condition* (true/false), checked at compile
//! time:
//!
//! * Point values are numbers; the device delivers bits and booleans as 1.0/0.0.
//! * `+ - * / %`, unary `-`, `abs`, `min`, `max` and `< <= > >=` take numbers.
//! * `==`/`!=` compare two numbers or two conditions, never one of each (`run == true` is an
//!   error: write `run == 1` or just `run`).
//! * `&&`, `||`, `!` and the whole expression take conditions. **Truthiness:** a point name on
//!   its own (optionally in parentheses) also counts as a condition, true when its value is
//!   nonzero, so both `run == 1` and `run && !fault` work. Any other number (a literal, the
//!   result of arithmetic or of a function) must be compared to become a condition, so
//!   `current_l1 + 1` or `1 && x` is an error rather than a silent "nonzero".
//! * `==`/`!=` on numbers compare exactly; for measured values write `abs(a - b) < 0.001`.
//!
//! # Unknown values (three-valued logic)
//!
//! A point with no good value (`None`, NaN, or an index past the end of the values) is
//! *unknown*, and so is every result computed from it. Division or `%` by zero and any other
//! NaN result (e.g. `inf - inf`) are unknown too, never infinite or an error. `&&`, `||` and
//! `!` follow Kleene logic: `&&` is false when either side is false even if the other is unknown,
//! `||` is true when either side is true, otherwise an unknown side makes the result unknown.
//! [`Expr::eval`] returns `None` for an unknown result. There are no side effects, so both sides
//! are always evaluated; "short-circuiting" is a property of the result, not of the order.
//!
//! # Invariants
//!
//! * A compiled [`Expr`]'s program leaves exactly one value on the stack and never needs more
//!   than 64 slots; `eval` still treats a violation as "unknown" rather than panicking.
//! * On the stack, conditions are always exactly 0.0, 1.0 or NaN (unknown); numbers use NaN
//!   for unknown. `&&`, `||` and `!` accept any number (nonzero = true), which is how bare
//!   point names act as conditions without a conversion step.
//! * [`Expr::points`] is sorted and deduplicated and holds every index the program loads.

/// Deepest nesting and deepest evaluation stack a condition may have.
const MAX_DEPTH: usize = 64;

/// Stack size for the common case, so small conditions don't pay for zeroing 64 slots per eval.
const SMALL_DEPTH: usize = 8;

/// A compile error in a condition, with the byte offset in the source where it was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at byte {at}: {message}")]
pub struct ExprError {
    /// Byte offset into the source text (the source length for "unexpected end").
    pub at: usize,
    /// What is wrong, and where possible what to write instead.
    pub message: String,
}

fn err(at: usize, message: impl Into<String>) -> ExprError {
    ExprError {
        at,
        message: message.into(),
    }
}

fn too_deep(at: usize) -> ExprError {
    err(
        at,
        format!("expression too deeply nested (more than {MAX_DEPTH} levels)"),
    )
}

/// One postfix instruction.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Const(f64),
    Load(usize),
    Neg,
    Abs,
    Not,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Min,
    Max,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

/// A compiled condition over one device's points.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    source: Box<str>,
    ops: Box<[Op]>,
    points: Box<[usize]>,
    depth: usize,
}

impl Expr {
    /// Compiles `src`; `resolve(name)` gives the point index or None ("unknown point `x`" error, with did-you-mean left to the caller).
    pub fn compile(src: &str, resolve: impl Fn(&str) -> Option<usize>) -> Result<Expr, ExprError> {
        let mut p = Parser {
            src,
            toks: lex(src)?,
            pos: 0,
            resolve,
            ops: Vec::new(),
            points: Vec::new(),
            depth: 0,
            max_depth: 0,
            nesting: 0,
        };
        if p.peek().tok == Tok::End {
            return Err(err(0, "empty expression"));
        }
        let top = p.parse_or()?;
        let rest = p.peek();
        match rest.tok {
            Tok::End => {}
            Tok::RParen => return Err(err(rest.at, "unmatched `)`")),
            _ => {
                return Err(err(
                    rest.at,
                    format!("expected an operator, found {}", p.describe(rest)),
                ));
            }
        }
        if top.ty == Ty::Num {
            return Err(err(
                top.at,
                "the expression must be a condition (true or false), but this is a number; \
                 compare it, e.g. `x > 0`",
            ));
        }
        let mut points = p.points;
        points.sort_unstable();
        points.dedup();
        Ok(Expr {
            source: src.into(),
            ops: p.ops.into_boxed_slice(),
            points: points.into_boxed_slice(),
            depth: p.max_depth,
        })
    }

    /// Evaluates against the device's current point values (index → value; None = no good value). Returns None when any point it needs is None (unknown truth), else Some(bool).
    pub fn eval(&self, values: &[Option<f64>]) -> Option<bool> {
        if self.depth <= SMALL_DEPTH {
            self.run::<SMALL_DEPTH>(values)
        } else {
            self.run::<MAX_DEPTH>(values)
        }
    }

    /// Indices of the points it reads (sorted, deduplicated).
    pub fn points(&self) -> &[usize] {
        &self.points
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    // Every `?` below is unreachable for a program built by `compile`; it stands in for a panic
    // so that a bug here makes one alarm "unknown" instead of taking the daemon down.
    fn run<const N: usize>(&self, values: &[Option<f64>]) -> Option<bool> {
        let mut stack = [0.0_f64; N];
        let mut len = 0_usize;
        for &op in self.ops.iter() {
            match op {
                Op::Const(v) => push(&mut stack, &mut len, v)?,
                Op::Load(i) => {
                    let v = match values.get(i) {
                        Some(&Some(v)) => v,
                        _ => f64::NAN,
                    };
                    push(&mut stack, &mut len, v)?;
                }
                Op::Neg => unary(&mut stack, len, |x| -x)?,
                Op::Abs => unary(&mut stack, len, f64::abs)?,
                Op::Not => unary(&mut stack, len, not)?,
                Op::Add => binary(&mut stack, &mut len, |a, b| a + b)?,
                Op::Sub => binary(&mut stack, &mut len, |a, b| a - b)?,
                Op::Mul => binary(&mut stack, &mut len, |a, b| a * b)?,
                Op::Div => binary(&mut stack, &mut len, |a, b| nonzero(b, a / b))?,
                Op::Rem => binary(&mut stack, &mut len, |a, b| nonzero(b, a % b))?,
                // f64::min/max would return the known side when the other is NaN (unknown).
                Op::Min => binary(&mut stack, &mut len, |a, b| known2(a, b, a.min(b)))?,
                Op::Max => binary(&mut stack, &mut len, |a, b| known2(a, b, a.max(b)))?,
                Op::Lt => binary(&mut stack, &mut len, |a, b| cmp(a, b, a < b))?,
                Op::Le => binary(&mut stack, &mut len, |a, b| cmp(a, b, a <= b))?,
                Op::Gt => binary(&mut stack, &mut len, |a, b| cmp(a, b, a > b))?,
                Op::Ge => binary(&mut stack, &mut len, |a, b| cmp(a, b, a >= b))?,
                Op::Eq => binary(&mut stack, &mut len, |a, b| cmp(a, b, exactly_eq(a, b)))?,
                Op::Ne => binary(&mut stack, &mut len, |a, b| cmp(a, b, !exactly_eq(a, b)))?,
                Op::And => binary(&mut stack, &mut len, and)?,
                Op::Or => binary(&mut stack, &mut len, or)?,
            }
        }
        if len != 1 {
            return None;
        }
        let v = *stack.first()?;
        if v.is_nan() { None } else { Some(v != 0.0) }
    }
}

#[inline(always)]
fn push(stack: &mut [f64], len: &mut usize, v: f64) -> Option<()> {
    *stack.get_mut(*len)? = v;
    *len += 1;
    Some(())
}

#[inline(always)]
fn unary(stack: &mut [f64], len: usize, f: impl FnOnce(f64) -> f64) -> Option<()> {
    let x = stack.get_mut(len.checked_sub(1)?)?;
    *x = f(*x);
    Some(())
}

#[inline(always)]
fn binary(stack: &mut [f64], len: &mut usize, f: impl FnOnce(f64, f64) -> f64) -> Option<()> {
    *len = len.checked_sub(1)?;
    let b = *stack.get(*len)?;
    let a = stack.get_mut(len.checked_sub(1)?)?;
    *a = f(*a, b);
    Some(())
}

/// `r` unless the divisor is zero, which is unknown rather than infinite.
#[inline(always)]
fn nonzero(divisor: f64, r: f64) -> f64 {
    if divisor == 0.0 { f64::NAN } else { r }
}

#[inline(always)]
fn known2(a: f64, b: f64, r: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        r
    }
}

/// A comparison result, unknown when either side is (IEEE would say false).
#[inline(always)]
fn cmp(a: f64, b: f64, r: bool) -> f64 {
    known2(a, b, f64::from(r))
}

#[allow(
    clippy::float_cmp,
    reason = "exact comparison is the documented meaning of `==`"
)]
#[inline(always)]
fn exactly_eq(a: f64, b: f64) -> bool {
    a == b
}

/// Known and nonzero.
#[inline(always)]
fn is_true(x: f64) -> bool {
    x != 0.0 && !x.is_nan()
}

#[inline(always)]
fn not(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else {
        f64::from(x == 0.0)
    }
}

#[inline(always)]
fn and(a: f64, b: f64) -> f64 {
    if a == 0.0 || b == 0.0 {
        0.0
    } else {
        known2(a, b, 1.0)
    }
}

#[inline(always)]
fn or(a: f64, b: f64) -> f64 {
    if is_true(a) || is_true(b) {
        1.0
    } else {
        known2(a, b, 0.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'s> {
    Num(f64),
    /// A bare name: may also be a function name when followed by `(`.
    Name(&'s str),
    /// A backtick-quoted name: always a point.
    Quoted(&'s str),
    True,
    False,
    LParen,
    RParen,
    Comma,
    OrOr,
    AndAnd,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Bang,
    End,
}

#[derive(Debug, Clone, Copy)]
struct Token<'s> {
    tok: Tok<'s>,
    at: usize,
    len: usize,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_lowercase() || b == b'_'
}

fn is_name_continue(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

/// Slices by byte offsets the lexer found at ASCII boundaries; never panics.
fn slice(src: &str, from: usize, to: usize) -> &str {
    src.get(from..to).unwrap_or("")
}

fn scan(bytes: &[u8], mut i: usize, pred: impl Fn(u8) -> bool) -> usize {
    while bytes.get(i).is_some_and(|&b| pred(b)) {
        i += 1;
    }
    i
}

fn lex(src: &str) -> Result<Vec<Token<'_>>, ExprError> {
    let bytes = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        let (tok, len) = match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b',' => (Tok::Comma, 1),
            b'+' => (Tok::Plus, 1),
            b'-' => (Tok::Minus, 1),
            b'*' => (Tok::Star, 1),
            b'/' => (Tok::Slash, 1),
            b'%' => (Tok::Percent, 1),
            b'|' if next == Some(b'|') => (Tok::OrOr, 2),
            b'|' => return Err(err(i, "use `||` for \"or\"")),
            b'&' if next == Some(b'&') => (Tok::AndAnd, 2),
            b'&' => return Err(err(i, "use `&&` for \"and\"")),
            b'=' => match next {
                Some(b'=') => (Tok::Eq, 2),
                Some(b'>') => return Err(err(i, "use `>=` for \"greater than or equal\"")),
                Some(b'<') => return Err(err(i, "use `<=` for \"less than or equal\"")),
                _ => return Err(err(i, "use `==` to compare")),
            },
            b'!' if next == Some(b'=') => (Tok::Ne, 2),
            b'!' => (Tok::Bang, 1),
            b'<' => match next {
                Some(b'=') => (Tok::Le, 2),
                Some(b'>') => return Err(err(i, "use `!=` for \"not equal\"")),
                _ => (Tok::Lt, 1),
            },
            b'>' if next == Some(b'=') => (Tok::Ge, 2),
            b'>' => (Tok::Gt, 1),
            b'`' => {
                // A backtick byte never occurs inside a multi-byte UTF-8 character, so the
                // offsets found here are always char boundaries.
                let body = bytes.get(i + 1..).unwrap_or(&[]);
                match body.iter().position(|&c| c == b'`') {
                    None => {
                        return Err(err(i, "unterminated name: missing the closing backtick"));
                    }
                    Some(0) => return Err(err(i, "empty name between backticks")),
                    Some(n) => (Tok::Quoted(slice(src, i + 1, i + 1 + n)), n + 2),
                }
            }
            b'0'..=b'9' => lex_number(src, i)?,
            b'.' if next.is_some_and(|c| c.is_ascii_digit()) => lex_number(src, i)?,
            _ if is_name_start(b) => {
                let end = scan(bytes, i, is_name_continue);
                let tok = match slice(src, i, end) {
                    "true" => Tok::True,
                    "false" => Tok::False,
                    "and" => return Err(err(i, "use `&&` instead of `and`")),
                    "or" => return Err(err(i, "use `||` instead of `or`")),
                    "not" => return Err(err(i, "use `!` instead of `not`")),
                    name => Tok::Name(name),
                };
                (tok, end - i)
            }
            _ => {
                let c = src.get(i..).and_then(|s| s.chars().next()).unwrap_or('?');
                let shown = if c.is_control() || c.is_whitespace() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                };
                let hint = if c.is_ascii_uppercase() {
                    " (names and keywords are lowercase)"
                } else {
                    ""
                };
                return Err(err(i, format!("unexpected character `{shown}`{hint}")));
            }
        };
        toks.push(Token { tok, at: i, len });
        i += len;
    }
    toks.push(Token {
        tok: Tok::End,
        at: src.len(),
        len: 0,
    });
    Ok(toks)
}

fn lex_number(src: &str, start: usize) -> Result<(Tok<'static>, usize), ExprError> {
    let bytes = src.as_bytes();
    let digit = |b: u8| b.is_ascii_digit();
    let mut i = scan(bytes, start, digit);
    if bytes.get(i) == Some(&b'.') {
        i = scan(bytes, i + 1, digit);
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(bytes.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        // Without digits the `e` is not an exponent; the name check below then reports it.
        if bytes.get(j).is_some_and(|b| b.is_ascii_digit()) {
            i = scan(bytes, j, digit);
        }
    }
    if bytes
        .get(i)
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
    {
        let end = scan(bytes, i, |b| {
            is_name_continue(b) || b.is_ascii_alphanumeric()
        });
        let word = slice(src, start, end);
        return Err(err(
            start,
            format!("a name cannot start with a digit; write it in backticks: `{word}`"),
        ));
    }
    let text = slice(src, start, i);
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok((Tok::Num(v), i - start)),
        Ok(_) => Err(err(start, format!("number `{text}` is too large"))),
        Err(_) => Err(err(start, format!("invalid number `{text}`"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Parser: recursive descent that type-checks and emits postfix code as it goes.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Cond,
    Num,
    /// A bare point reference: a number that may also stand as a condition (nonzero = true).
    Point,
}

/// A parsed sub-expression: its type and where it starts, for error positions.
#[derive(Debug, Clone, Copy)]
struct Typed {
    ty: Ty,
    at: usize,
}

type Parsed = Result<Typed, ExprError>;

struct Parser<'s, R> {
    src: &'s str,
    toks: Vec<Token<'s>>,
    pos: usize,
    resolve: R,
    ops: Vec<Op>,
    points: Vec<usize>,
    /// Stack depth after the code emitted so far.
    depth: usize,
    max_depth: usize,
    /// Current recursion depth, bounded so hostile input cannot overflow the native stack.
    nesting: usize,
}

impl<'s, R: Fn(&str) -> Option<usize>> Parser<'s, R> {
    fn peek(&self) -> Token<'s> {
        self.toks.get(self.pos).copied().unwrap_or(Token {
            tok: Tok::End,
            at: self.src.len(),
            len: 0,
        })
    }

    fn bump(&mut self) -> Token<'s> {
        let t = self.peek();
        if t.tok != Tok::End {
            self.pos += 1;
        }
        t
    }

    fn describe(&self, t: Token<'s>) -> String {
        match t.tok {
            Tok::End => "the end of the expression".to_string(),
            // The token text already carries its backticks.
            Tok::Quoted(_) => slice(self.src, t.at, t.at + t.len).to_string(),
            _ => format!("`{}`", slice(self.src, t.at, t.at + t.len)),
        }
    }

    fn emit(&mut self, op: Op, at: usize) -> Result<(), ExprError> {
        match op {
            Op::Const(_) | Op::Load(_) => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(too_deep(at));
                }
                self.max_depth = self.max_depth.max(self.depth);
            }
            Op::Neg | Op::Abs | Op::Not => {}
            _ => self.depth = self.depth.saturating_sub(1),
        }
        self.ops.push(op);
        Ok(())
    }

    fn need_num(&self, t: Typed, op: &str, side: &str) -> Result<(), ExprError> {
        if t.ty == Ty::Cond {
            return Err(err(
                t.at,
                format!("`{op}` needs a number, but its {side} is a condition (true or false)"),
            ));
        }
        Ok(())
    }

    fn need_cond(&self, t: Typed, op: &str, side: &str) -> Result<(), ExprError> {
        if t.ty == Ty::Num {
            return Err(err(
                t.at,
                format!(
                    "`{op}` needs a condition (true or false), but its {side} is a number; \
                     compare it, e.g. `x > 0`"
                ),
            ));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Parsed {
        self.logic(Self::parse_and, Tok::OrOr, Op::Or, "||")
    }

    fn parse_and(&mut self) -> Parsed {
        self.logic(Self::parse_cmp, Tok::AndAnd, Op::And, "&&")
    }

    fn logic(&mut self, sub: fn(&mut Self) -> Parsed, tok: Tok<'s>, op: Op, name: &str) -> Parsed {
        let mut left = sub(self)?;
        while self.peek().tok == tok {
            let at = self.bump().at;
            self.need_cond(left, name, "left side")?;
            let right = sub(self)?;
            self.need_cond(right, name, "right side")?;
            self.emit(op, at)?;
            left = Typed {
                ty: Ty::Cond,
                at: left.at,
            };
        }
        Ok(left)
    }

    fn parse_cmp(&mut self) -> Parsed {
        let left = self.parse_sum()?;
        let (op, name) = match self.peek().tok {
            Tok::Eq => (Op::Eq, "=="),
            Tok::Ne => (Op::Ne, "!="),
            Tok::Lt => (Op::Lt, "<"),
            Tok::Le => (Op::Le, "<="),
            Tok::Gt => (Op::Gt, ">"),
            Tok::Ge => (Op::Ge, ">="),
            _ => return Ok(left),
        };
        let at = self.bump().at;
        let equality = matches!(op, Op::Eq | Op::Ne);
        if !equality {
            self.need_num(left, name, "left side")?;
        }
        let right = self.parse_sum()?;
        if equality {
            if (left.ty == Ty::Cond) != (right.ty == Ty::Cond) {
                return Err(err(
                    at,
                    format!(
                        "`{name}` cannot compare a number with a condition (true or false); \
                         compare numbers (`run == 1`) or use the point as a condition (`run`)"
                    ),
                ));
            }
        } else {
            self.need_num(right, name, "right side")?;
        }
        self.emit(op, at)?;
        let next = self.peek();
        if matches!(
            next.tok,
            Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge
        ) {
            return Err(err(
                next.at,
                "comparisons cannot be chained; write `a < b && b < c`",
            ));
        }
        Ok(Typed {
            ty: Ty::Cond,
            at: left.at,
        })
    }

    fn parse_sum(&mut self) -> Parsed {
        self.arith(Self::parse_product, |t| match t {
            Tok::Plus => Some((Op::Add, "+")),
            Tok::Minus => Some((Op::Sub, "-")),
            _ => None,
        })
    }

    fn parse_product(&mut self) -> Parsed {
        self.arith(Self::parse_unary, |t| match t {
            Tok::Star => Some((Op::Mul, "*")),
            Tok::Slash => Some((Op::Div, "/")),
            Tok::Percent => Some((Op::Rem, "%")),
            _ => None,
        })
    }

    fn arith(
        &mut self,
        sub: fn(&mut Self) -> Parsed,
        pick: fn(Tok<'s>) -> Option<(Op, &'static str)>,
    ) -> Parsed {
        let mut left = sub(self)?;
        while let Some((op, name)) = pick(self.peek().tok) {
            let at = self.bump().at;
            self.need_num(left, name, "left side")?;
            let right = sub(self)?;
            self.need_num(right, name, "right side")?;
            self.emit(op, at)?;
            left = Typed {
                ty: Ty::Num,
                at: left.at,
            };
        }
        Ok(left)
    }

    fn parse_unary(&mut self) -> Parsed {
        // Every recursion cycle (parentheses, unary operators, arguments) passes through here.
        let t = self.peek();
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(too_deep(t.at));
        }
        let out = match t.tok {
            Tok::Bang => {
                self.bump();
                let x = self.parse_unary()?;
                self.need_cond(x, "!", "operand")?;
                self.emit(Op::Not, t.at)?;
                Typed {
                    ty: Ty::Cond,
                    at: t.at,
                }
            }
            Tok::Minus => {
                self.bump();
                let mark = self.ops.len();
                let x = self.parse_unary()?;
                self.need_num(x, "-", "operand")?;
                // Fold `-2` into a constant so literals cost nothing at eval time.
                let single = self.ops.len() == mark + 1;
                match self.ops.last_mut() {
                    Some(Op::Const(v)) if single => *v = -*v,
                    _ => self.emit(Op::Neg, t.at)?,
                }
                Typed {
                    ty: Ty::Num,
                    at: t.at,
                }
            }
            _ => self.parse_primary()?,
        };
        self.nesting -= 1;
        Ok(out)
    }

    fn parse_primary(&mut self) -> Parsed {
        let t = self.bump();
        match t.tok {
            Tok::Num(v) => {
                self.emit(Op::Const(v), t.at)?;
                Ok(Typed {
                    ty: Ty::Num,
                    at: t.at,
                })
            }
            Tok::True | Tok::False => {
                self.emit(Op::Const(f64::from(t.tok == Tok::True)), t.at)?;
                Ok(Typed {
                    ty: Ty::Cond,
                    at: t.at,
                })
            }
            Tok::Name(name) if self.peek().tok == Tok::LParen => self.call(name, t.at),
            Tok::Name(name) | Tok::Quoted(name) => self.point(name, t),
            Tok::LParen => {
                let inner = self.parse_or()?;
                let close = self.bump();
                match close.tok {
                    // Keep the inner type so `(run)` still works as a condition.
                    Tok::RParen => Ok(Typed {
                        ty: inner.ty,
                        at: t.at,
                    }),
                    Tok::End => Err(err(t.at, "unclosed `(`: missing `)`")),
                    _ => Err(err(
                        close.at,
                        format!(
                            "expected `)` or an operator, found {}",
                            self.describe(close)
                        ),
                    )),
                }
            }
            Tok::End => Err(err(t.at, "unexpected end of expression: expected a value")),
            _ => Err(err(
                t.at,
                format!("expected a value, found {}", self.describe(t)),
            )),
        }
    }

    fn point(&mut self, name: &str, t: Token<'s>) -> Parsed {
        let Some(index) = (self.resolve)(name) else {
            let mut message = format!("unknown point `{name}`");
            if matches!(t.tok, Tok::Name(_)) && name.contains('-') {
                message.push_str(" (to subtract, put spaces around `-`: `a - b`)");
            }
            return Err(err(t.at, message));
        };
        self.points.push(index);
        self.emit(Op::Load(index), t.at)?;
        Ok(Typed {
            ty: Ty::Point,
            at: t.at,
        })
    }

    fn call(&mut self, name: &str, at: usize) -> Parsed {
        let (op, arity) = match name {
            "abs" => (Op::Abs, 1),
            "min" => (Op::Min, 2),
            "max" => (Op::Max, 2),
            _ => {
                return Err(err(
                    at,
                    format!("unknown function `{name}`; the functions are abs, min and max"),
                ));
            }
        };
        let open = self.bump();
        let mut count = 0_usize;
        if self.peek().tok == Tok::RParen {
            self.bump();
        } else {
            loop {
                let arg = self.parse_or()?;
                count += 1;
                self.need_num(arg, name, &format!("argument {count}"))?;
                let sep = self.bump();
                match sep.tok {
                    Tok::Comma => {}
                    Tok::RParen => break,
                    Tok::End => return Err(err(open.at, "unclosed `(`: missing `)`")),
                    _ => {
                        return Err(err(
                            sep.at,
                            format!("expected `,` or `)`, found {}", self.describe(sep)),
                        ));
                    }
                }
            }
        }
        if count != arity {
            let plural = if arity == 1 { "" } else { "s" };
            return Err(err(
                at,
                format!("`{name}` takes {arity} argument{plural}, found {count}"),
            ));
        }
        self.emit(op, at)?;
        Ok(Typed { ty: Ty::Num, at })
    }
}

#[cfg(test)]
#[allow(
    clippy::float_cmp,
    reason = "the reference evaluator compares exactly, like the language"
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 8] = [
        "run_state",
        "current_l1",
        "current-l1",
        "1st_stage",
        "a",
        "b",
        "and",
        "temp",
    ];

    fn resolve(name: &str) -> Option<usize> {
        NAMES.iter().position(|n| *n == name)
    }

    fn vals(set: &[(&str, Option<f64>)]) -> Vec<Option<f64>> {
        let mut v = vec![None; NAMES.len()];
        for (name, x) in set {
            v[resolve(name).unwrap()] = *x;
        }
        v
    }

    const T: Option<bool> = Some(true);
    const F: Option<bool> = Some(false);
    const U: Option<bool> = None;

    type Case<'a> = (&'a str, &'a [(&'a str, Option<f64>)], Option<bool>);

    #[test]
    fn good_expressions() {
        let cases: &[Case<'_>] = &[
            // The motivating example.
            (
                "run_state == 1 && current_l1 < 0.5",
                &[("run_state", Some(1.0)), ("current_l1", Some(0.3))],
                T,
            ),
            (
                "run_state == 1 && current_l1 < 0.5",
                &[("run_state", Some(1.0)), ("current_l1", Some(0.7))],
                F,
            ),
            (
                "run_state == 1 && current_l1 < 0.5",
                &[("run_state", Some(0.0))],
                F,
            ),
            (
                "run_state == 1 && current_l1 < 0.5",
                &[("run_state", Some(1.0))],
                U,
            ),
            // Literals.
            ("true", &[], T),
            ("false", &[], F),
            ("!true", &[], F),
            ("1e3 == 1000", &[], T),
            ("1E+3 == 1000", &[], T),
            ("2.5e-1 == 0.25", &[], T),
            (".5 == 0.5", &[], T),
            ("1. == 1", &[], T),
            // Precedence and associativity.
            ("1 + 2 * 3 == 7", &[], T),
            ("(1 + 2) * 3 == 9", &[], T),
            ("10 - 4 - 3 == 3", &[], T),
            ("8 / 4 / 2 == 1", &[], T),
            ("2 * 3 % 4 == 2", &[], T),
            ("7 % 4 * 2 == 6", &[], T),
            ("true || false && false", &[], T),
            ("(true || false) && false", &[], F),
            ("!false && false", &[], F),
            ("!(false && false)", &[], T),
            // Unary minus.
            ("-2 < 0", &[], T),
            ("- -2 == 2", &[], T),
            ("-(1 + 2) == -3", &[], T),
            ("-2 * -3 == 6", &[], T),
            ("-a == -3", &[("a", Some(3.0))], T),
            ("a - -a == 6", &[("a", Some(3.0))], T),
            ("--a == 3", &[("a", Some(3.0))], T),
            // Backticks and hyphenated names.
            ("`1st_stage` > 3", &[("1st_stage", Some(4.0))], T),
            ("`and` == 1", &[("and", Some(1.0))], T),
            ("`current-l1` == 2", &[("current-l1", Some(2.0))], T),
            (
                "current-l1 > 1",
                &[("current-l1", Some(2.0)), ("current_l1", Some(0.0))],
                T,
            ),
            (
                "current-l1 - current_l1 == 1",
                &[("current-l1", Some(3.0)), ("current_l1", Some(2.0))],
                T,
            ),
            // Truthiness of bare points.
            ("run_state", &[("run_state", Some(2.0))], T),
            ("run_state", &[("run_state", Some(0.0))], F),
            ("run_state", &[("run_state", Some(-0.0))], F),
            ("run_state", &[], U),
            ("run_state", &[("run_state", Some(f64::NAN))], U),
            ("(run_state)", &[("run_state", Some(1.0))], T),
            ("!run_state", &[("run_state", Some(0.0))], T),
            (
                "run_state && !a",
                &[("run_state", Some(1.0)), ("a", Some(0.0))],
                T,
            ),
            // Three-valued logic.
            ("a && b", &[("a", Some(0.0))], F),
            ("a && b", &[("b", Some(0.0))], F),
            ("a && b", &[("a", Some(1.0))], U),
            ("a || b", &[("a", Some(1.0))], T),
            ("a || b", &[("b", Some(1.0))], T),
            ("a || b", &[("a", Some(0.0))], U),
            ("!a", &[], U),
            ("a > 1 && false", &[], F),
            ("true || a > 1", &[], T),
            ("(a > 1) == true", &[], U),
            // Division by zero is unknown, and absorbed like any unknown.
            ("a / b > 1", &[("a", Some(1.0)), ("b", Some(0.0))], U),
            (
                "a / b > 1 || true",
                &[("a", Some(1.0)), ("b", Some(0.0))],
                T,
            ),
            ("a / 0 > 1 && false", &[("a", Some(1.0))], F),
            ("a % b == 0", &[("a", Some(1.0)), ("b", Some(0.0))], U),
            ("a % b == 1", &[("a", Some(7.0)), ("b", Some(3.0))], T),
            ("a / b == 2", &[("a", Some(1.0)), ("b", Some(0.5))], T),
            // Functions.
            ("abs(a) == 3", &[("a", Some(-3.0))], T),
            (
                "abs(a - b) < 0.01",
                &[("a", Some(1.0)), ("b", Some(1.001))],
                T,
            ),
            ("min(a, b) == 1", &[("a", Some(1.0)), ("b", Some(2.0))], T),
            ("max(a, 2) == 2", &[("a", Some(1.0))], T),
            ("min(a, b) < 5", &[("a", Some(1.0))], U),
            ("max(a, b) > 0", &[("b", Some(1.0))], U),
            ("min(max(a, 0), 10) == 10", &[("a", Some(30.0))], T),
            // Comparisons.
            ("a <= 1", &[("a", Some(1.0))], T),
            ("a >= 1", &[("a", Some(0.5))], F),
            ("a != 1", &[("a", Some(2.0))], T),
            ("a == 1", &[("a", Some(1.0 + 1e-12))], F),
            (
                "(a > 1) == (b > 1)",
                &[("a", Some(2.0)), ("b", Some(3.0))],
                T,
            ),
            ("(a > 1) != true", &[("a", Some(2.0))], F),
            ("true == false", &[], F),
            // Infinities pass through; NaN results are unknown.
            ("a > 1e308", &[("a", Some(f64::INFINITY))], T),
            ("a - a == 0", &[("a", Some(f64::INFINITY))], U),
            // Whitespace.
            (
                "a > 1\n\t&& b < 2\r\n",
                &[("a", Some(2.0)), ("b", Some(1.0))],
                T,
            ),
            ("a>1&&b<2", &[("a", Some(2.0)), ("b", Some(1.0))], T),
        ];
        for (src, set, want) in cases {
            let e = Expr::compile(src, resolve)
                .unwrap_or_else(|e| panic!("`{src}` failed to compile: {e}"));
            assert_eq!(e.eval(&vals(set)), *want, "`{src}` with {set:?}");
            assert_eq!(e.source(), *src);
        }
    }

    #[test]
    fn bad_expressions() {
        let deep_parens = format!("{}a{} > 1", "(".repeat(100), ")".repeat(100));
        let many_bangs = format!("{}a", "!".repeat(10_000));
        let many_opens = "(".repeat(10_000);
        // Nesting stays at 41 but each level keeps two values on the stack.
        let deep_stack = format!("{}a{} > 0", "a + a * (".repeat(40), ")".repeat(40));
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty expression"),
            ("  \n ", 0, "empty expression"),
            ("run_state = 1", 10, "use `==` to compare"),
            ("=", 0, "use `==`"),
            ("a & b", 2, "use `&&`"),
            ("a | b", 2, "use `||`"),
            ("a and b", 2, "use `&&` instead of `and`"),
            ("a or b", 2, "use `||` instead of `or`"),
            ("not a", 0, "use `!` instead of `not`"),
            ("a => 1", 2, "use `>=`"),
            ("a =< 1", 2, "use `<=`"),
            ("a <> 1", 2, "use `!=`"),
            ("a < b < c", 6, "cannot be chained"),
            ("a == b == c", 7, "cannot be chained"),
            ("1 < 2 == 2 < 3", 6, "cannot be chained"),
            (
                "current_l1 + 1",
                0,
                "the expression must be a condition (true or false)",
            ),
            ("1", 0, "must be a condition"),
            ("  -a", 2, "must be a condition"),
            ("abs(a)", 0, "must be a condition"),
            ("unknown_pt > 1", 0, "unknown point `unknown_pt`"),
            ("a > `nope`", 4, "unknown point `nope`"),
            ("a-b > 1", 0, "unknown point `a-b` (to subtract, put spaces"),
            ("(a > 1", 0, "unclosed `(`"),
            ("((a > 1)", 0, "unclosed `(`"),
            ("a > 1)", 5, "unmatched `)`"),
            ("(a > 1))", 7, "unmatched `)`"),
            ("a >", 3, "unexpected end"),
            ("a > 1 &&", 8, "unexpected end"),
            ("!", 1, "unexpected end"),
            ("a # 1", 2, "unexpected character `#`"),
            ("a ^ 2 > 1", 2, "unexpected character `^`"),
            ("a > 1 ∧ b", 6, "unexpected character `∧`"),
            ("a >\u{a0}1", 3, "unexpected character `\\u{a0}`"),
            ("Run_state", 0, "lowercase"),
            ("1st_stage > 1", 0, "backticks: `1st_stage`"),
            ("0x10 > a", 0, "cannot start with a digit"),
            ("`unterminated > 1", 0, "unterminated name"),
            ("`` > 1", 0, "empty name"),
            ("abs(a, b) > 1", 0, "`abs` takes 1 argument, found 2"),
            ("min(a) > 1", 0, "`min` takes 2 arguments, found 1"),
            ("max() > 1", 0, "`max` takes 2 arguments, found 0"),
            ("foo(a) > 1", 0, "unknown function `foo`"),
            (
                "abs(a > 1) > 0",
                4,
                "`abs` needs a number, but its argument 1 is a condition",
            ),
            ("min(a, b", 3, "unclosed `(`"),
            ("min(a b) > 1", 6, "expected `,` or `)`, found `b`"),
            ("`a`(b) > 1", 3, "expected an operator, found `(`"),
            (
                "true + 1 > 0",
                0,
                "`+` needs a number, but its left side is a condition",
            ),
            (
                "a + (b > 1) > 0",
                4,
                "`+` needs a number, but its right side",
            ),
            ("a > true", 4, "`>` needs a number"),
            ("a == true", 2, "cannot compare a number with a condition"),
            (
                "(a > 1) != b",
                8,
                "cannot compare a number with a condition",
            ),
            (
                "1 && a",
                0,
                "`&&` needs a condition (true or false), but its left side is a number",
            ),
            ("a && b + 1", 5, "`&&` needs a condition"),
            ("a || 2", 5, "`||` needs a condition"),
            ("!(a + 1)", 1, "`!` needs a condition"),
            ("-true == 1", 1, "`-` needs a number"),
            ("a b", 2, "expected an operator, found `b`"),
            ("a > 1 b", 6, "expected an operator, found `b`"),
            ("a > 1 `b`", 6, "expected an operator, found `b`"),
            ("(a b)", 3, "expected `)` or an operator, found `b`"),
            ("()", 1, "expected a value, found `)`"),
            ("a > ,", 4, "expected a value, found `,`"),
            ("a > 1 ,", 6, "expected an operator, found `,`"),
            ("a > && b", 4, "expected a value, found `&&`"),
            ("1e999 > a", 0, "too large"),
            (&deep_parens, 64, "expression too deeply nested"),
            (&many_bangs, 64, "expression too deeply nested"),
            (&many_opens, 64, "expression too deeply nested"),
            (&deep_stack, 0, "expression too deeply nested"),
        ];
        for (src, at, needle) in cases {
            let short: String = src.chars().take(40).collect();
            match Expr::compile(src, resolve) {
                Ok(e) => panic!("`{short}` compiled to {e:?}"),
                Err(e) => {
                    assert!(
                        e.message.contains(needle),
                        "`{short}`: message {:?} lacks {needle:?}",
                        e.message
                    );
                    // The stack-depth case is found mid-way; only its message is pinned.
                    if *src != deep_stack {
                        assert_eq!(e.at, *at, "`{short}`: {e}");
                    }
                    assert_eq!(e.to_string(), format!("at byte {}: {}", e.at, e.message));
                }
            }
        }
    }

    #[test]
    fn nesting_within_the_limit_compiles() {
        let src = format!("{}a{} > 1", "(".repeat(60), ")".repeat(60));
        let e = Expr::compile(&src, resolve).unwrap();
        assert_eq!(e.eval(&vals(&[("a", Some(2.0))])), T);
        // Right-nested sums need a deep stack, which takes the 64-slot path.
        let src = format!("{}1{} == 31", "1 + (".repeat(30), ")".repeat(30));
        let e = Expr::compile(&src, resolve).unwrap();
        assert!(e.depth > SMALL_DEPTH);
        assert_eq!(e.eval(&[]), T);
        // Long flat chains need neither recursion nor stack.
        let src = format!("{}0 == 5000", "1 + ".repeat(5000));
        assert_eq!(Expr::compile(&src, resolve).unwrap().eval(&[]), T);
    }

    #[test]
    fn points_are_sorted_and_deduplicated() {
        let e = Expr::compile("b > a && a < 1 && `b` > 0 && run_state", resolve).unwrap();
        assert_eq!(e.points(), &[0, 4, 5]);
        assert!(Expr::compile("true", resolve).unwrap().points().is_empty());
    }

    #[test]
    fn missing_values_are_unknown() {
        let e = Expr::compile("temp > 1", resolve).unwrap();
        assert_eq!(e.eval(&[]), U);
        let e = Expr::compile("false && temp > 1", resolve).unwrap();
        assert_eq!(e.eval(&[]), F);
    }

    #[test]
    fn negative_literals_are_folded() {
        let e = Expr::compile("a > -2", resolve).unwrap();
        assert_eq!(&*e.ops, &[Op::Load(4), Op::Const(-2.0), Op::Gt]);
    }

    #[test]
    #[ignore = "timing; run with `cargo test --release -- --ignored --nocapture`"]
    #[expect(clippy::disallowed_methods, reason = "measures its own wall time")]
    fn timing() {
        let e = Expr::compile("run_state == 1 && current_l1 < 0.5", resolve).unwrap();
        let rows = [
            vals(&[("run_state", Some(1.0)), ("current_l1", Some(0.3))]),
            vals(&[("run_state", Some(1.0)), ("current_l1", Some(0.7))]),
            vals(&[("run_state", Some(0.0)), ("current_l1", None)]),
            vals(&[("run_state", None), ("current_l1", Some(0.1))]),
        ];
        let n = 20_000_000_usize;
        let start = std::time::Instant::now();
        let mut hits = 0_u64;
        for i in 0..n {
            let row = std::hint::black_box(&rows[i % rows.len()]);
            if e.eval(row) == T {
                hits += 1;
            }
        }
        let elapsed = start.elapsed();
        println!(
            "{:.1} ns/eval ({hits} true of {n})",
            elapsed.as_nanos() as f64 / n as f64
        );
    }

    // ---- Property tests -------------------------------------------------------------------

    /// Rendered names and the indices `presolve` gives them.
    const PNAMES: [&str; 5] = ["p0", "p-1", "p_2", "`3rd`", "q"];

    fn presolve(name: &str) -> Option<usize> {
        match name {
            "p0" => Some(0),
            "p-1" => Some(1),
            "p_2" => Some(2),
            "3rd" => Some(3),
            "q" => Some(4),
            _ => None,
        }
    }

    #[derive(Debug, Clone)]
    enum N {
        Lit(f64),
        Pt(usize),
        Neg(Box<N>),
        Abs(Box<N>),
        Min(Box<N>, Box<N>),
        Max(Box<N>, Box<N>),
        Bin(&'static str, Box<N>, Box<N>),
    }

    #[derive(Debug, Clone)]
    enum C {
        Bool(bool),
        Pt(usize),
        Cmp(&'static str, N, N),
        Eq(bool, Box<C>, Box<C>),
        Not(Box<C>),
        And(Box<C>, Box<C>),
        Or(Box<C>, Box<C>),
    }

    fn num() -> impl Strategy<Value = N> {
        let leaf = prop_oneof![
            prop_oneof![(0_u8..6).prop_map(f64::from), Just(0.5), Just(2.5)].prop_map(N::Lit),
            (0_usize..5).prop_map(N::Pt),
        ];
        leaf.prop_recursive(2, 6, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|x| N::Neg(Box::new(x))),
                inner.clone().prop_map(|x| N::Abs(Box::new(x))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| N::Min(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| N::Max(Box::new(a), Box::new(b))),
                (
                    prop::sample::select(vec!["+", "-", "*", "/", "%"]),
                    inner.clone(),
                    inner
                )
                    .prop_map(|(o, a, b)| N::Bin(o, Box::new(a), Box::new(b))),
            ]
        })
    }

    fn cond() -> impl Strategy<Value = C> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(C::Bool),
            (0_usize..5).prop_map(C::Pt),
            (
                prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]),
                num(),
                num()
            )
                .prop_map(|(o, a, b)| C::Cmp(o, a, b)),
        ];
        leaf.prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|c| C::Not(Box::new(c))),
                (any::<bool>(), inner.clone(), inner.clone()).prop_map(|(eq, a, b)| C::Eq(
                    eq,
                    Box::new(a),
                    Box::new(b)
                )),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| C::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| C::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    /// Precedence levels: 1 `||`, 2 `&&`, 3 comparisons, 4 `+ -`, 5 `* / %`, 6 unary, 7 atoms.
    fn paren((s, prec): (String, u8), min: u8) -> String {
        if prec < min { format!("({s})") } else { s }
    }

    fn show_n(n: &N) -> (String, u8) {
        match n {
            N::Lit(v) => (format!("{v}"), 7),
            N::Pt(i) => (PNAMES[*i].to_string(), 7),
            N::Neg(x) => (format!("-{}", paren(show_n(x), 6)), 6),
            N::Abs(x) => (format!("abs({})", show_n(x).0), 7),
            N::Min(a, b) => (format!("min({}, {})", show_n(a).0, show_n(b).0), 7),
            N::Max(a, b) => (format!("max({},{})", show_n(a).0, show_n(b).0), 7),
            N::Bin(op, a, b) => {
                let p = if matches!(*op, "+" | "-") { 4 } else { 5 };
                let s = format!("{} {op} {}", paren(show_n(a), p), paren(show_n(b), p + 1));
                (s, p)
            }
        }
    }

    fn show_c(c: &C) -> (String, u8) {
        match c {
            C::Bool(b) => (b.to_string(), 7),
            C::Pt(i) => (PNAMES[*i].to_string(), 7),
            C::Cmp(op, a, b) => (format!("{} {op} {}", show_n(a).0, show_n(b).0), 3),
            C::Eq(eq, a, b) => {
                let op = if *eq { "==" } else { "!=" };
                (format!("{} {op} {}", eq_operand(a), eq_operand(b)), 3)
            }
            C::Not(x) => (format!("!{}", paren(show_c(x), 6)), 6),
            C::And(a, b) => (
                format!("{} && {}", paren(show_c(a), 2), paren(show_c(b), 3)),
                2,
            ),
            C::Or(a, b) => (
                format!("{} || {}", paren(show_c(a), 1), paren(show_c(b), 2)),
                1,
            ),
        }
    }

    /// A bare point is a number to `==`, so compare it to zero to keep it a condition.
    fn eq_operand(c: &C) -> String {
        match c {
            C::Pt(i) => format!("({} != 0)", PNAMES[*i]),
            _ => paren(show_c(c), 4),
        }
    }

    fn ref_point(vals: &[Option<f64>], i: usize) -> Option<f64> {
        vals.get(i).copied().flatten().filter(|v| !v.is_nan())
    }

    fn ref_n(n: &N, vals: &[Option<f64>]) -> Option<f64> {
        let r = match n {
            N::Lit(v) => *v,
            N::Pt(i) => ref_point(vals, *i)?,
            N::Neg(x) => -ref_n(x, vals)?,
            N::Abs(x) => ref_n(x, vals)?.abs(),
            N::Min(a, b) => ref_n(a, vals)?.min(ref_n(b, vals)?),
            N::Max(a, b) => ref_n(a, vals)?.max(ref_n(b, vals)?),
            N::Bin(op, a, b) => {
                let (a, b) = (ref_n(a, vals)?, ref_n(b, vals)?);
                match *op {
                    "+" => a + b,
                    "-" => a - b,
                    "*" => a * b,
                    "/" if b == 0.0 => return None,
                    "/" => a / b,
                    "%" if b == 0.0 => return None,
                    _ => a % b,
                }
            }
        };
        Some(r).filter(|v| !v.is_nan())
    }

    fn ref_c(c: &C, vals: &[Option<f64>]) -> Option<bool> {
        match c {
            C::Bool(b) => Some(*b),
            C::Pt(i) => ref_point(vals, *i).map(|v| v != 0.0),
            C::Cmp(op, a, b) => {
                let (a, b) = (ref_n(a, vals)?, ref_n(b, vals)?);
                Some(match *op {
                    "==" => a == b,
                    "!=" => a != b,
                    "<" => a < b,
                    "<=" => a <= b,
                    ">" => a > b,
                    _ => a >= b,
                })
            }
            C::Eq(eq, a, b) => Some((ref_c(a, vals)? == ref_c(b, vals)?) == *eq),
            C::Not(x) => ref_c(x, vals).map(|b| !b),
            C::And(a, b) => match (ref_c(a, vals), ref_c(b, vals)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            C::Or(a, b) => match (ref_c(a, vals), ref_c(b, vals)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
        }
    }

    fn n_points(n: &N, out: &mut Vec<usize>) {
        match n {
            N::Lit(_) => {}
            N::Pt(i) => out.push(*i),
            N::Neg(x) | N::Abs(x) => n_points(x, out),
            N::Min(a, b) | N::Max(a, b) | N::Bin(_, a, b) => {
                n_points(a, out);
                n_points(b, out);
            }
        }
    }

    fn c_points(c: &C, out: &mut Vec<usize>) {
        match c {
            C::Bool(_) => {}
            C::Pt(i) => out.push(*i),
            C::Cmp(_, a, b) => {
                n_points(a, out);
                n_points(b, out);
            }
            C::Not(x) => c_points(x, out),
            C::Eq(_, a, b) | C::And(a, b) | C::Or(a, b) => {
                c_points(a, out);
                c_points(b, out);
            }
        }
    }

    fn small_value() -> impl Strategy<Value = Option<f64>> {
        // Mostly known, so that results are not drowned in unknowns.
        prop_oneof![
            1 => Just(None),
            1 => Just(Some(f64::NAN)),
            8 => (-3_i8..=3).prop_map(|v| Some(f64::from(v))),
            1 => Just(Some(0.5)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn compile_never_panics_on_any_string(src in any::<String>()) {
            if let Err(e) = Expr::compile(&src, presolve) {
                prop_assert!(src.is_char_boundary(e.at), "{:?}: {}", src, e);
                prop_assert!(!e.message.is_empty());
            }
        }

        #[test]
        fn compile_and_eval_never_panic_on_near_misses(
            src in "[a-z0-9_ ()&|!=<>+*/%.`,eE-]{0,60}",
            values in prop::collection::vec(any::<Option<f64>>(), 0..6),
        ) {
            match Expr::compile(&src, |n| Some(n.len() % 7)) {
                Ok(e) => {
                    std::hint::black_box(e.eval(&values));
                }
                Err(e) => prop_assert!(e.at <= src.len(), "{:?}: {}", src, e),
            }
        }

        #[test]
        fn eval_never_panics_on_any_values(
            c in cond(),
            values in prop::collection::vec(
                prop::option::of(prop::num::f64::ANY), 0..6),
        ) {
            let src = show_c(&c).0;
            let e = Expr::compile(&src, presolve).unwrap();
            std::hint::black_box(e.eval(&values));
        }

        #[test]
        fn matches_reference_evaluator(
            c in cond(),
            values in prop::collection::vec(small_value(), 3..=5),
        ) {
            let src = show_c(&c).0;
            let e = Expr::compile(&src, presolve)
                .map_err(|e| TestCaseError::fail(format!("`{src}`: {e}")))?;
            prop_assert_eq!(e.eval(&values), ref_c(&c, &values), "`{}` with {:?}", src, values);
            let mut pts = Vec::new();
            c_points(&c, &mut pts);
            pts.sort_unstable();
            pts.dedup();
            prop_assert_eq!(e.points(), &pts[..]);
        }
    }
}
