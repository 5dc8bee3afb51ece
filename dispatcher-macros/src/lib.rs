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
    match expand(attr.into(), item.into()) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
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

const OPTIONS: &str = "name, timeout, on_duplicate, queue, context, crate";

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
            let key = Ident::parse_any(input)?;
            let k = key.to_string();
            if seen.contains(&k) {
                return Err(Error::new(
                    key.span(),
                    format!("option `{k}` is given twice"),
                ));
            }
            seen.push(k.clone());
            let value: Option<Lit> = if input.peek(Token![=]) {
                input.parse::<Token![=]>()?;
                Some(input.parse().map_err(|e| {
                    Error::new(e.span(), format!("option `{k}` takes a literal value"))
                })?)
            } else {
                None
            };
            match (k.as_str(), value) {
                ("name", Some(Lit::Str(s))) => {
                    if s.value().is_empty() || s.value().len() > 255 {
                        return Err(Error::new(s.span(), "a task name is 1 to 255 bytes"));
                    }
                    o.name = Some(s)
                }
                ("queue", Some(Lit::Str(s))) => {
                    let v = s.value();
                    if v.is_empty() || v.len() > 63 {
                        return Err(Error::new(s.span(), "a channel name is 1 to 63 bytes"));
                    }
                    o.queue = Some(s)
                }
                ("crate", Some(Lit::Str(s))) => o.krate = Some(s.parse()?),
                ("timeout", Some(Lit::Int(i))) => o.timeout = Some(i.base10_parse::<u64>()? as f64),
                ("timeout", Some(Lit::Float(f))) => o.timeout = Some(f.base10_parse::<f64>()?),
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
                                format!("unknown on_duplicate policy {v:?}; expected one of \"parallel\", \"discard\", \"serial\", \"queue_one\""),
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
                ("timeout", Some(other)) => return Err(Error::new(
                    other.span(),
                    "`timeout` takes a number of seconds, e.g. `timeout = 5` or `timeout = 0.5`",
                )),
                ("name" | "queue" | "crate" | "on_duplicate", Some(other)) => {
                    return Err(Error::new(
                        other.span(),
                        format!("`{k}` takes a string, e.g. `{k} = \"...\"`"),
                    ))
                }
                ("context", Some(other)) => {
                    return Err(Error::new(
                        other.span(),
                        "`context` is a flag: write `context` alone",
                    ))
                }
                ("name" | "queue" | "crate" | "on_duplicate" | "timeout", None) => {
                    return Err(Error::new(
                        key.span(),
                        format!("option `{k}` needs a value: `{k} = ...`"),
                    ))
                }
                _ => {
                    return Err(Error::new(
                        key.span(),
                        format!("unknown task option `{k}`; expected one of {OPTIONS}"),
                    ))
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        if let Some(t) = o.timeout {
            if !(t.is_finite() && t > 0.0 && t <= 1.0e9) {
                return Err(Error::new(
                    Span::call_site(),
                    "`timeout` must be above 0 seconds",
                ));
            }
        }
        Ok(o)
    }
}

fn is_task_context(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) => is_task_context(&r.elem),
        Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "TaskContext"),
        _ => false,
    }
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

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let opts: Options = syn::parse2(attr)?;
    let func: ItemFn = syn::parse2(item)?;
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(Error::new(
            sig.generics.span(),
            "a task cannot be generic: the registry needs one concrete function",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(Error::new(v.span(), "a task cannot be variadic"));
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
        match inputs.peek() {
            Some(FnArg::Typed(pt)) if matches!(&*pt.ty, Type::Reference(_)) => {
                takes_context = true;
                inputs.next();
            }
            Some(other) => {
                return Err(Error::new(
                    other.span(),
                    "a task declared with `context` takes `&TaskContext` as its first parameter",
                ));
            }
            None => {
                return Err(Error::new(span, "`context` is declared but the function has no parameters; add `ctx: &TaskContext` first"));
            }
        }
    }
    let mut names: Vec<Ident> = Vec::new();
    let mut types: Vec<Type> = Vec::new();
    for arg in inputs {
        match arg {
            FnArg::Receiver(r) => {
                return Err(Error::new(
                    r.span(),
                    "a task is a free function; it cannot take `self`",
                ))
            }
            FnArg::Typed(pt) => {
                if is_task_context(&pt.ty) {
                    return Err(Error::new(
                        pt.ty.span(),
                        if opts.context.is_some() {
                            "the `&TaskContext` parameter must come first"
                        } else {
                            "this task takes a TaskContext: declare it with `#[task(context)]` and make it the first parameter"
                        },
                    ));
                }
                if let Type::Reference(r) = &*pt.ty {
                    return Err(Error::new(r.span(), "task parameters are deserialized from JSON and must be owned types (e.g. `String`, not `&str`)"));
                }
                if matches!(&*pt.ty, Type::ImplTrait(_)) {
                    return Err(Error::new(
                        pt.ty.span(),
                        "task parameters must be concrete types, not `impl Trait`",
                    ));
                }
                let ident = match &*pt.pat {
                    Pat::Ident(pi) => pi.ident.clone(),
                    other => {
                        return Err(Error::new(
                            other.span(),
                            "task parameters must be plain names (`name: Type`)",
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
    let output = if returns_result(&sig.output) {
        quote!(#p::result_output(__out))
    } else {
        quote!(#p::value_output(__out))
    };
    let call_params = names.iter().zip(&types).map(|(n, t)| quote!(#n: #t));
    let to_args = names
        .iter()
        .zip(&name_strs)
        .zip(&types)
        .map(|((n, s), ty)| {
            quote_spanned! {ty.span()=> #p::to_argument(<Self as #p::Task>::NAME, #s, &#n) }
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
