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
}

pub(crate) const OPTION_NAMES: [&str; 6] = [
    "name",
    "timeout",
    "on_duplicate",
    "queue",
    "context",
    "crate",
];
pub(crate) const OPTIONS: &str = "`name`, `timeout`, `on_duplicate`, `queue`, `context`, `crate`";
pub(crate) const POLICIES: &str = "\"parallel\", \"discard\", \"serial\", \"queue_one\"";

/// An example value of a string option, for error messages.
pub(crate) fn example(option: &str) -> &'static str {
    match option {
        "name" => "name = \"app.send_email\"",
        "queue" => "queue = \"emails\"",
        "crate" => "crate = \"my_crate::dispatcher_core\"",
        "on_duplicate" => "on_duplicate = \"serial\"",
        "timeout" => "timeout = 5",
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
        syn::Expr::Unary(u) if option == "timeout" && matches!(u.op, syn::UnOp::Neg(_)) => {
            Err(Error::new_spanned(u, "`timeout` must be above 0 seconds"))
        }
        syn::Expr::Path(p)
            if option != "timeout" && option != "context" && p.path.get_ident().is_some() =>
        {
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
                        return Err(Error::new(s.span(), "a queue (channel) name is at most 63 bytes"));
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
                                format!("unknown on_duplicate policy {v:?}; expected one of {POLICIES}"),
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
                ("timeout", Some(Lit::Str(s))) if s.value().trim().parse::<f64>().is_ok() => {
                    return Err(Error::new(
                        s.span(),
                        format!(
                            "`timeout` takes a number of seconds, not a string: write `timeout = {}`",
                            s.value().trim()
                        ),
                    ))
                }
                ("timeout", Some(other)) => return Err(Error::new(
                    other.span(),
                    "`timeout` takes a number of seconds, e.g. `timeout = 5` or `timeout = 0.5`",
                )),
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

pub(crate) fn check_timeout(t: f64, span: Span) -> syn::Result<f64> {
    if t.is_finite() && t > 0.0 && t <= 1.0e9 {
        Ok(t)
    } else if t > 1.0e9 {
        Err(Error::new(span, "`timeout` is at most 1e9 seconds"))
    } else {
        Err(Error::new(span, "`timeout` must be above 0 seconds"))
    }
}
