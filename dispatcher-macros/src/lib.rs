//! The `#[task]` attribute. Use it as `dispatcher_core::task`; the generated code refers to
//! `::dispatcher_core::__private` (override with `crate = "path"` when re-exporting).
//!
//! ```ignore
//! #[task(name = "demo.add", timeout = 5, on_duplicate = "serial", queue = "math")]
//! fn add(a: i64, b: i64) -> i64 { a + b }
//! ```
//!
//! Options:
//!
//! | option | value | meaning |
//! |---|---|---|
//! | `name` | string | the registered name; default `module::path::function` |
//! | `timeout` | number of seconds | the pool ends a Call that runs longer |
//! | `on_duplicate` | `"parallel"`, `"discard"`, `"serial"`, `"queue_one"` | duplicate policy |
//! | `queue` | string | the channel publishers send it to by default |
//! | `context` | flag | the first parameter is `&TaskContext` |
//! | `crate` | string path | where the core crate is, when it is re-exported |
//!
//! The attribute keeps the function as it is and adds a type of the same name (in the type
//! namespace) that implements `Task`, with `call(...)` building a typed submission.
//!
//! The function must be a free, safe, non-generic `fn` or `async fn`. Its parameters are plain
//! names (the keyword argument names) of owned types implementing `Serialize` and
//! `DeserializeOwned` (`String`, not `&str`); `Option<T>` parameters may be left out by
//! publishers. With `context`, the first parameter is `&TaskContext` and is not one of the task's
//! arguments. The return type implements `Serialize`, or is a `Result<T, E>` with `T: Serialize`
//! and `E: Display` (an `Err` fails the Call with its text).
//!
//! Mistakes are reported at the offending token; `tests/ui/fail` holds one case of each.
#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Error, FnArg, Ident, ItemFn, Lit, Pat, ReturnType, Token, Type};

/// Declares a task. See the crate documentation for the options.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    match expand(attr.into(), item.clone()) {
        Ok(ts) => ts.into(),
        // Keep the function as written next to the error, so that its callers do not add
        // errors of their own.
        Err(e) => {
            let error = e.to_compile_error();
            quote!(#error #item).into()
        }
    }
}

struct Options {
    name: Option<syn::LitStr>,
    timeout: Option<f64>,
    on_duplicate: Option<Ident>,
    queue: Option<syn::LitStr>,
    context: Option<Span>,
    krate: Option<syn::Path>,
}

const OPTION_NAMES: [&str; 6] = [
    "name",
    "timeout",
    "on_duplicate",
    "queue",
    "context",
    "crate",
];
const OPTIONS: &str = "`name`, `timeout`, `on_duplicate`, `queue`, `context`, `crate`";
const POLICIES: &str = "\"parallel\", \"discard\", \"serial\", \"queue_one\"";

/// An example value of a string option, for error messages.
fn example(option: &str) -> &'static str {
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
fn distance(a: &str, b: &str) -> usize {
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
fn literal(option: &str, value: syn::Expr) -> syn::Result<Lit> {
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

fn check_timeout(t: f64, span: Span) -> syn::Result<f64> {
    if t.is_finite() && t > 0.0 && t <= 1.0e9 {
        Ok(t)
    } else if t > 1.0e9 {
        Err(Error::new(span, "`timeout` is at most 1e9 seconds"))
    } else {
        Err(Error::new(span, "`timeout` must be above 0 seconds"))
    }
}

/// The type behind any number of references.
fn unreferenced(ty: &Type) -> &Type {
    match ty {
        Type::Reference(r) => unreferenced(&r.elem),
        Type::Paren(p) => unreferenced(&p.elem),
        Type::Group(g) => unreferenced(&g.elem),
        other => other,
    }
}

/// Whether `ty` names `TaskContext` (behind any references).
fn is_task_context(ty: &Type) -> bool {
    match unreferenced(ty) {
        Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "TaskContext"),
        _ => false,
    }
}

/// Checks the first parameter of a task declared with `context`: it must be `&TaskContext`.
fn check_context_param(arg: &FnArg) -> syn::Result<()> {
    let pt = match arg {
        FnArg::Typed(pt) => pt,
        FnArg::Receiver(r) => {
            return Err(Error::new_spanned(
                r,
                "a task is a free function; it cannot take `self`",
            ))
        }
    };
    match &*pt.ty {
        Type::Reference(r) if r.mutability.is_none() && is_task_context(&r.elem) => {
            if matches!(&*r.elem, Type::Reference(_)) {
                Err(Error::new_spanned(
                    &pt.ty,
                    "the context parameter is taken by one shared reference: write `&TaskContext`",
                ))
            } else {
                Ok(())
            }
        }
        Type::Reference(r) if is_task_context(&r.elem) => Err(Error::new_spanned(
            r.mutability,
            "the context parameter is a shared reference: write `&TaskContext`, not `&mut TaskContext`",
        )),
        ty if is_task_context(ty) => Err(Error::new_spanned(
            ty,
            "the context parameter is taken by reference: write `&TaskContext`",
        )),
        ty => Err(Error::new_spanned(
            ty,
            "a task declared with `context` takes `&TaskContext` as its first parameter; add `ctx: &TaskContext` before the others, or remove `context`",
        )),
    }
}

/// The `T` of a `Result<T, E>` return type.
fn ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        syn::GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

fn returns_result(ret: &ReturnType) -> bool {
    match ret {
        ReturnType::Type(_, ty) => match &**ty {
            Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
        ReturnType::Default => false,
    }
}

/// Parses the item `#[task]` is on, with a clear error when it is not a function.
fn parse_function(item: TokenStream2) -> syn::Result<ItemFn> {
    match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => Ok(f),
        Err(e) => match syn::parse2::<syn::Item>(item) {
            Ok(syn::Item::Fn(_) | syn::Item::Verbatim(_)) | Err(_) => Err(e),
            Ok(other) => Err(Error::new(
                other.span(),
                "`#[task]` goes on a function, e.g. `#[task] fn add(a: i64, b: i64) -> i64`",
            )),
        },
    }
}

/// The message for a reference parameter, with the owned type to use instead where obvious.
fn reference_message(r: &syn::TypeReference) -> String {
    let owned = match unreferenced(&r.elem) {
        Type::Path(p) if p.path.is_ident("str") => Some("`String` instead of `&str`".to_owned()),
        Type::Slice(_) => Some("a `Vec<_>` instead of a slice".to_owned()),
        Type::Path(p) if p.path.is_ident("Path") => Some("`PathBuf` instead of `&Path`".to_owned()),
        _ => None,
    };
    match owned {
        Some(owned) => format!(
            "task parameters are deserialized from JSON and cannot borrow; take {owned}"
        ),
        None => "task parameters are deserialized from JSON and cannot borrow; take the parameter by value".to_owned(),
    }
}

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let opts: Options = syn::parse2(attr)?;
    let func = parse_function(item)?;
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(Error::new_spanned(
            &sig.generics,
            "a task cannot be generic: its arguments are decoded from JSON into one concrete type each; use concrete types (e.g. `serde_json::Value` for any JSON)",
        ));
    }
    if let Some(u) = &sig.unsafety {
        return Err(Error::new_spanned(
            u,
            "a task cannot be `unsafe fn`: workers call it with whatever a message holds; make it safe and use `unsafe` blocks inside",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(Error::new_spanned(v, "a task cannot be variadic"));
    }
    let krate: TokenStream2 = match &opts.krate {
        Some(p) => quote!(#p),
        None => quote!(::dispatcher_core),
    };
    let p = quote!(#krate::__private);
    let fn_name = &sig.ident;
    let vis = &func.vis;

    let mut inputs = sig.inputs.iter().peekable();
    let mut takes_context = false;
    if let Some(span) = opts.context {
        let Some(first) = inputs.peek() else {
            return Err(Error::new(
                span,
                format!("`context` is declared but `{fn_name}` has no parameters; add `ctx: &TaskContext` as its first parameter, or remove `context`"),
            ));
        };
        let misplaced = sig.inputs.iter().skip(1).find_map(|arg| match arg {
            FnArg::Typed(pt) if is_task_context(&pt.ty) => Some(pt),
            _ => None,
        });
        if let Err(e) = check_context_param(first) {
            return Err(match misplaced {
                Some(pt) => Error::new_spanned(
                    pt,
                    "the `&TaskContext` parameter must come first; move it before the other parameters",
                ),
                None => e,
            });
        }
        takes_context = true;
        inputs.next();
    }
    let mut names: Vec<Ident> = Vec::new();
    let mut types: Vec<Type> = Vec::new();
    for arg in inputs {
        match arg {
            FnArg::Receiver(r) => {
                return Err(Error::new_spanned(
                    r,
                    "a task is a free function; it cannot take `self` (declare it outside the `impl` block)",
                ))
            }
            FnArg::Typed(pt) => {
                if is_task_context(&pt.ty) {
                    return Err(Error::new_spanned(
                        &pt.ty,
                        if takes_context {
                            "a task takes at most one `&TaskContext`".to_owned()
                        } else if sig.inputs.first().is_some_and(|first| std::ptr::eq(first, arg)) {
                            "this task takes a `TaskContext`: declare it with `#[task(context)]`".to_owned()
                        } else {
                            "this task takes a `TaskContext`: declare it with `#[task(context)]` and make it the first parameter".to_owned()
                        },
                    ));
                }
                if let Type::Reference(r) = &*pt.ty {
                    return Err(Error::new_spanned(r, reference_message(r)));
                }
                if matches!(&*pt.ty, Type::ImplTrait(_)) {
                    return Err(Error::new_spanned(
                        &pt.ty,
                        "task parameters must be concrete types, not `impl Trait`: their values are decoded from JSON",
                    ));
                }
                let ident = match &*pt.pat {
                    Pat::Ident(pi) if pi.subpat.is_none() => pi.ident.clone(),
                    other => {
                        return Err(Error::new_spanned(
                            other,
                            "task parameters must be plain names (`name: Type`): the name is the keyword argument; destructure inside the function",
                        ))
                    }
                };
                names.push(ident);
                types.push((*pt.ty).clone());
            }
        }
    }
    let name_strs: Vec<String> = names.iter().map(|n| n.unraw().to_string()).collect();
    let task_name = match &opts.name {
        Some(s) => quote!(#s),
        None => {
            let f = fn_name.unraw().to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #f))
        }
    };
    let mut config = quote!(#p::TaskConfig::new());
    if let Some(t) = opts.timeout {
        let nanos = (t * 1e9).round() as u64;
        config = quote!(#config.with_timeout(#p::Duration::from_nanos(#nanos)));
    }
    if let Some(v) = &opts.on_duplicate {
        config = quote!(#config.with_on_duplicate(#p::OnDuplicate::#v));
    }
    if let Some(q) = &opts.queue {
        config = quote!(#config.with_queue(#q));
    }
    if takes_context {
        config = quote!(#config.with_context());
    }

    let idx: Vec<usize> = (0..names.len()).collect();
    let checks = types.iter().zip(&name_strs).zip(&idx).map(|((ty, n), i)| {
        quote_spanned! {ty.span()=>
            #p::decode_argument::<#ty>(<Self as #p::Task>::NAME, #n, __args.get(#i).and_then(|v| v.as_ref()))?;
        }
    });
    let decodes = types.iter().zip(&name_strs).zip(&names).zip(&idx).map(|(((ty, n), id), i)| {
        let local = format_ident!("__arg_{}", id.unraw());
        quote_spanned! {ty.span()=>
            let #local: #ty = match #p::decode_argument::<#ty>(<#fn_name as #p::Task>::NAME, #n, __args.get(#i)) {
                ::core::result::Result::Ok(v) => v,
                ::core::result::Result::Err(e) => return ::core::result::Result::Err(#p::argument_failure(e)),
            };
        }
    });
    let locals: Vec<Ident> = names
        .iter()
        .map(|id| format_ident!("__arg_{}", id.unraw()))
        .collect();
    let ctx_arg = if takes_context {
        quote!(&__context,)
    } else {
        quote!()
    };
    let await_ = if sig.asyncness.is_some() {
        quote!(.await)
    } else {
        quote!()
    };
    // Spanned at the return type, so that a result that is not `Serialize` is reported there.
    // For a `Result`, at its `Ok` type.
    let ret_span = match &sig.output {
        ReturnType::Type(_, ty) => ok_type(ty).unwrap_or(ty).span(),
        ReturnType::Default => sig.ident.span(),
    };
    let output = if returns_result(&sig.output) {
        quote_spanned!(ret_span=> #p::result_output(__out))
    } else {
        quote_spanned!(ret_span=> #p::value_output(__out))
    };
    let call_params = names.iter().zip(&types).map(|(n, t)| quote!(#n: #t));
    let to_args = names
        .iter()
        .zip(&name_strs)
        .zip(&types)
        .map(|((n, s), ty)| {
            quote_spanned! {ty.span()=> #p::to_argument::<#ty>(<Self as #p::Task>::NAME, #s, &#n) }
        });
    let doc = format!("The task `{fn_name}`: see [`{fn_name}()`]. Build a submission with `{fn_name}::call(...)`.");

    Ok(quote! {
        #func

        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy)]
        #vis struct #fn_name {}

        impl #fn_name {
            /// A submission of this task with these arguments, to publish or submit.
            #[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
            #vis fn call(#(#call_params),*) -> #p::Submission<#fn_name> {
                #p::Submission::from_arguments(::std::vec![#(#to_args),*])
            }

            #[doc(hidden)]
            fn __check(__args: &[::core::option::Option<#p::Value>]) -> #p::Result<()> {
                #(#checks)*
                ::core::result::Result::Ok(())
            }

            #[doc(hidden)]
            fn __run(__invocation: #p::Invocation) -> #p::TaskFuture {
                #p::Box::pin(async move {
                    let #p::Invocation { args: __args, context: __context, .. } = __invocation;
                    let _ = &__context;
                    #(#decodes)*
                    let __out = #fn_name(#ctx_arg #(#locals),*) #await_;
                    #output
                })
            }
        }

        impl #p::Task for #fn_name {
            const NAME: &'static str = #task_name;
            fn descriptor() -> &'static #p::TaskDescriptor {
                #[#p::linkme::distributed_slice(#p::COLLECTED_TASKS)]
                #[linkme(crate = #p::linkme)]
                static DESCRIPTOR: #p::TaskDescriptor = #p::TaskDescriptor::new(
                    <#fn_name as #p::Task>::NAME,
                    &[#(#name_strs),*],
                    #config,
                    #fn_name::__check,
                    #fn_name::__run,
                );
                &DESCRIPTOR
            }
        }
    })
}
