//! Parsing the attribute's options, with errors that name the option and show an example.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Error, Ident, Lit, Token};

pub(crate) struct Options {
    pub(crate) name: Option<syn::LitStr>,
    pub(crate) timeout: Option<f64>,
    pub(crate) on_duplicate: Option<Ident>,
    pub(crate) queue: Option<syn::LitStr>,
    pub(crate) context: Option<Span>,
    pub(crate) krate: Option<syn::Path>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) backoff: Option<f64>,
    pub(crate) unique: bool,
    pub(crate) concurrency: Option<u32>,
}

pub(crate) const OPTION_NAMES: [&str; 10] = [
    "name",
    "timeout",
    "on_duplicate",
    "queue",
    "context",
    "crate",
    "max_attempts",
    "backoff",
    "unique",
    "concurrency",
];
pub(crate) const OPTIONS: &str = "`name`, `timeout`, `on_duplicate`, `queue`, `context`, `crate`, `max_attempts`, `backoff`, `unique`, `concurrency`";

/// Options whose value is a string.
const STRING_OPTIONS: [&str; 4] = ["name", "queue", "crate", "on_duplicate"];
/// Options whose value is a number of seconds above 0.
const SECONDS_OPTIONS: [&str; 2] = ["timeout", "backoff"];
/// Options whose value is a whole number of at least 1.
const COUNT_OPTIONS: [&str; 2] = ["max_attempts", "concurrency"];

/// The largest `backoff`, in seconds: the retry backoff's cap (one hour, as
/// `dispatcher_core::task::MAX_BACKOFF`).
const MAX_BACKOFF_SECS: f64 = 3600.0;
pub(crate) const POLICIES: &str = "\"parallel\", \"discard\", \"serial\", \"queue_one\"";

/// An example of each option with a value, for error messages.
pub(crate) fn example(option: &str) -> &'static str {
    match option {
        "name" => "name = \"app.send_email\"",
        "queue" => "queue = \"emails\"",
        "crate" => "crate = \"my_crate::dispatcher_core\"",
        "on_duplicate" => "on_duplicate = \"serial\"",
        "timeout" => "timeout = 5",
        "max_attempts" => "max_attempts = 5",
        "backoff" => "backoff = 2",
        "unique" => "unique = true",
        "concurrency" => "concurrency = 4",
        _ => "context",
    }
}

/// Edit distance between two short ASCII words, for "did you mean" suggestions.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The value of `option = value` as a literal, or an error saying what to write instead.
pub(crate) fn literal(option: &str, value: syn::Expr) -> syn::Result<Lit> {
    match value {
        syn::Expr::Lit(l) => Ok(l.lit),
        // A literal passed through a `macro_rules!` fragment arrives in an invisible group.
        syn::Expr::Group(g) => literal(option, *g.expr),
        syn::Expr::Unary(u)
            if SECONDS_OPTIONS.contains(&option) && matches!(u.op, syn::UnOp::Neg(_)) =>
        {
            let message = format!("`{option}` must be above 0 seconds, not {}", negated(&u));
            Err(Error::new_spanned(u, message))
        }
        syn::Expr::Unary(u)
            if COUNT_OPTIONS.contains(&option) && matches!(u.op, syn::UnOp::Neg(_)) =>
        {
            let message = format!("`{option}` must be at least 1, not {}", negated(&u));
            Err(Error::new_spanned(u, message))
        }
        syn::Expr::Path(p) if STRING_OPTIONS.contains(&option) && p.path.get_ident().is_some() => {
            let word = p.path.segments[0].ident.to_string();
            Err(Error::new_spanned(
                p,
                format!("`{option}` takes a string: write `{option} = \"{word}\"`"),
            ))
        }
        other => Err(Error::new_spanned(
            other,
            format!(
                "option `{option}` takes a literal, not an expression, e.g. `{}`",
                example(option)
            ),
        )),
    }
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut o = Options {
            name: None,
            timeout: None,
            on_duplicate: None,
            queue: None,
            context: None,
            krate: None,
            max_attempts: None,
            backoff: None,
            unique: false,
            concurrency: None,
        };
        let mut seen: Vec<String> = Vec::new();
        while !input.is_empty() {
            let key = Ident::parse_any(input)
                .map_err(|e| Error::new(e.span(), format!("expected a task option: {OPTIONS}")))?;
            let k = key.to_string();
            if !OPTION_NAMES.contains(&k.as_str()) {
                let closest = OPTION_NAMES
                    .iter()
                    .map(|o| (distance(&k, o), o))
                    .min()
                    .filter(|(d, o)| *d <= 2 && *d < o.len());
                let hint = match closest {
                    Some((_, o)) => format!("did you mean `{o}`?"),
                    None => format!("the options are {OPTIONS}"),
                };
                return Err(Error::new(
                    key.span(),
                    format!("unknown task option `{k}`; {hint}"),
                ));
            }
            if seen.contains(&k) {
                return Err(Error::new(
                    key.span(),
                    format!("option `{k}` is given twice; keep only one `{k}`"),
                ));
            }
            seen.push(k.clone());
            let value: Option<Lit> = if input.peek(Token![=]) {
                input.parse::<Token![=]>()?;
                if input.is_empty() || input.peek(Token![,]) {
                    return Err(input.error(format!(
                        "option `{k}` needs a value after `=`, e.g. `{}`",
                        example(&k)
                    )));
                }
                Some(literal(&k, input.parse()?)?)
            } else {
                None
            };
            match (k.as_str(), value) {
                ("name", Some(Lit::Str(s))) => {
                    if s.value().is_empty() {
                        return Err(Error::new(
                            s.span(),
                            "a task name cannot be empty; remove `name` to register the task as `module::path::function`",
                        ));
                    }
                    if s.value().len() > 255 {
                        return Err(Error::new(s.span(), "a task name is at most 255 bytes"));
                    }
                    o.name = Some(s)
                }
                ("queue", Some(Lit::Str(s))) => {
                    let v = s.value();
                    if v.is_empty() {
                        return Err(Error::new(
                            s.span(),
                            "a queue name cannot be empty; remove `queue` to use the publisher's default channel",
                        ));
                    }
                    if v.len() > 63 {
                        return Err(Error::new(
                            s.span(),
                            "a queue (channel) name is at most 63 bytes",
                        ));
                    }
                    o.queue = Some(s)
                }
                ("crate", Some(Lit::Str(s))) => o.krate = Some(s.parse()?),
                ("timeout", Some(Lit::Int(i))) => {
                    o.timeout = Some(check_timeout(i.base10_parse::<u64>()? as f64, i.span())?)
                }
                ("timeout", Some(Lit::Float(f))) => {
                    o.timeout = Some(check_timeout(f.base10_parse::<f64>()?, f.span())?)
                }
                ("backoff", Some(Lit::Int(i))) => {
                    o.backoff = Some(check_backoff(i.base10_parse::<u64>()? as f64, i.span())?)
                }
                ("backoff", Some(Lit::Float(f))) => {
                    o.backoff = Some(check_backoff(f.base10_parse::<f64>()?, f.span())?)
                }
                ("max_attempts", Some(Lit::Int(i))) => o.max_attempts = Some(check_count(&k, &i)?),
                ("concurrency", Some(Lit::Int(i))) => o.concurrency = Some(check_count(&k, &i)?),
                ("unique", None) => o.unique = true,
                ("unique", Some(Lit::Bool(b))) => o.unique = b.value,
                ("on_duplicate", Some(Lit::Str(s))) => {
                    let v = s.value();
                    let variant = match v.as_str() {
                        "parallel" => "Parallel",
                        "discard" => "Discard",
                        "serial" => "Serial",
                        "queue_one" => "QueueOne",
                        _ => {
                            return Err(Error::new(
                                s.span(),
                                format!(
                                    "unknown on_duplicate policy {v:?}; expected one of {POLICIES}"
                                ),
                            ))
                        }
                    };
                    o.on_duplicate = Some(Ident::new(variant, s.span()));
                }
                ("context", None) => o.context = Some(key.span()),
                ("context", Some(Lit::Bool(b))) => {
                    if b.value {
                        o.context = Some(key.span())
                    }
                }
                ("timeout" | "backoff", Some(Lit::Str(s)))
                    if s.value().trim().parse::<f64>().is_ok() =>
                {
                    return Err(Error::new(
                        s.span(),
                        format!(
                            "`{k}` takes a number of seconds, not a string: write `{k} = {}`",
                            s.value().trim()
                        ),
                    ))
                }
                ("timeout" | "backoff", Some(other)) => {
                    return Err(Error::new(
                        other.span(),
                        format!(
                        "`{k}` takes a number of seconds, e.g. `{k} = 5` or `{k} = 0.5`, not {}",
                        describe(&other)
                    ),
                    ))
                }
                ("max_attempts" | "concurrency", Some(Lit::Str(s)))
                    if s.value().trim().parse::<u32>().is_ok() =>
                {
                    return Err(Error::new(
                        s.span(),
                        format!(
                            "`{k}` takes a whole number, not a string: write `{k} = {}`",
                            s.value().trim()
                        ),
                    ))
                }
                ("max_attempts" | "concurrency", Some(other)) => {
                    return Err(Error::new(
                        other.span(),
                        format!(
                            "`{k}` takes a whole number of at least 1, e.g. `{}`, not {}",
                            example(&k),
                            describe(&other)
                        ),
                    ))
                }
                ("unique", Some(other)) => {
                    return Err(Error::new(
                        other.span(),
                        format!(
                            "`unique` takes `true` or `false` (or `unique` alone), not {}",
                            describe(&other)
                        ),
                    ))
                }
                ("on_duplicate", Some(other)) => {
                    return Err(Error::new(
                        other.span(),
                        format!("`on_duplicate` takes a string, one of {POLICIES}"),
                    ))
                }
                ("name" | "queue" | "crate", Some(other)) => {
                    return Err(Error::new(
                        other.span(),
                        format!("`{k}` takes a string, e.g. `{}`", example(&k)),
                    ))
                }
                ("context", Some(other)) => {
                    return Err(Error::new(
                        other.span(),
                        "`context` is a flag: write `context` alone (or `context = true`)",
                    ))
                }
                _ => {
                    return Err(Error::new(
                        key.span(),
                        format!("option `{k}` needs a value, e.g. `{}`", example(&k)),
                    ))
                }
            }
            if input.is_empty() {
                break;
            }
            if !input.peek(Token![,]) {
                return Err(input.error("expected `,` between task options"));
            }
            input.parse::<Token![,]>()?;
        }
        Ok(o)
    }
}

/// A negated value as an error message shows it: `-5` (not `- 5`).
fn negated(u: &syn::ExprUnary) -> String {
    let operand = quote::ToTokens::to_token_stream(&u.expr).to_string();
    format!("-{operand}")
}

/// A literal as an error message shows it: its kind and its text.
fn describe(lit: &Lit) -> String {
    let kind = match lit {
        Lit::Str(_) | Lit::ByteStr(_) | Lit::CStr(_) => "the string",
        Lit::Int(_) => "the integer",
        Lit::Float(_) => "the number",
        Lit::Bool(_) => "the boolean",
        Lit::Byte(_) | Lit::Char(_) => "the character",
        _ => "the literal",
    };
    let text = quote::ToTokens::to_token_stream(lit).to_string();
    format!("{kind} `{text}`")
}

/// A count option (`max_attempts`, `concurrency`): a whole number from 1 to `u32::MAX`.
fn check_count(option: &str, lit: &syn::LitInt) -> syn::Result<u32> {
    match lit.base10_parse::<u64>() {
        Ok(0) => Err(Error::new(
            lit.span(),
            format!("`{option}` must be at least 1, not 0"),
        )),
        Ok(n) => u32::try_from(n).map_err(|_| {
            Error::new(
                lit.span(),
                format!("`{option}` is at most {}, not {n}", u32::MAX),
            )
        }),
        Err(_) => Err(Error::new(
            lit.span(),
            format!("`{option}` is at most {}, not {lit}", u32::MAX),
        )),
    }
}

/// A `backoff` in seconds: above 0 and at most the backoff's cap.
pub(crate) fn check_backoff(t: f64, span: Span) -> syn::Result<f64> {
    if t.is_finite() && t > 0.0 && t <= MAX_BACKOFF_SECS {
        Ok(t)
    } else if t > MAX_BACKOFF_SECS {
        Err(Error::new(
            span,
            format!("`backoff` is at most {MAX_BACKOFF_SECS} seconds (the longest retry backoff), not {t}"),
        ))
    } else {
        Err(Error::new(
            span,
            format!("`backoff` must be above 0 seconds, not {t}"),
        ))
    }
}

pub(crate) fn check_timeout(t: f64, span: Span) -> syn::Result<f64> {
    if t.is_finite() && t > 0.0 && t <= 1.0e9 {
        Ok(t)
    } else if t > 1.0e9 {
        Err(Error::new(span, "`timeout` is at most 1e9 seconds"))
    } else {
        Err(Error::new(span, "`timeout` must be above 0 seconds"))
    }
}
