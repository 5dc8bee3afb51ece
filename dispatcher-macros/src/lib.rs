//! The `#[task]` attribute. Use it as `dispatcher::task` or `dispatcher_core::task`; the
//! generated code refers to the `__private` module of whichever of the two the using crate
//! depends on (the facade when it names both), found in its `Cargo.toml`, also when the
//! dependency is renamed. Override with `crate = "path"` when re-exporting from a crate of your
//! own.
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
//! | `max_attempts` | whole number ≥ 1 | how many times a durable queue runs a job of it before failing it; default 3 |
//! | `backoff` | number of seconds, at most 3600 | base of the exponential wait between a durable-queue job's attempts (doubling each attempt, capped at an hour); default 1 |
//! | `unique` | `true` or `false` (or the flag alone) | a durable queue returns the existing job for an enqueue with the same arguments while one is available or running; default `false` |
//! | `concurrency` | whole number ≥ 1 | at most this many Calls of it run at once across all services of a durable queue; default no limit |
//!
//! The last four are policy for jobs of a durable queue. A running task reads which attempt it is
//! (1 for a first run) from `TaskContext::attempt`.
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

mod options;
mod signature;

use options::Options;
use signature::{
    check_context_param, is_task_context, ok_type, parse_function, reference_message,
    returns_result,
};

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Error, FnArg, Ident, Pat, ReturnType, Type};

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
        None => default_crate_path(),
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
    if let Some(n) = opts.max_attempts {
        config = quote!(#config.with_max_attempts(#n));
    }
    if let Some(b) = opts.backoff {
        let nanos = (b * 1e9).round() as u64;
        config = quote!(#config.with_backoff(#p::Duration::from_nanos(#nanos)));
    }
    if opts.unique {
        config = quote!(#config.with_unique());
    }
    if let Some(n) = opts.concurrency {
        config = quote!(#config.with_concurrency(#n));
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

/// The path generated code names: the facade when the using crate depends on it, else the
/// contract crate, as either is named in the using crate's `Cargo.toml` (renames included). A
/// crate that names the facade and has the contract crate as a dev-dependency only must get the
/// facade: its library could not see the other.
fn default_crate_path() -> TokenStream2 {
    use proc_macro_crate::{crate_name, FoundCrate};
    for (package, fallback) in [
        ("dispatcher", "dispatcher"),
        ("dispatcher-core", "dispatcher_core"),
    ] {
        match crate_name(package) {
            Ok(FoundCrate::Name(name)) => {
                let ident = proc_macro2::Ident::new(&name, proc_macro2::Span::call_site());
                return quote!(::#ident);
            }
            // The package itself (its doc tests and integration tests are separate crates that
            // name it as usual).
            Ok(FoundCrate::Itself) => {
                let ident = proc_macro2::Ident::new(fallback, proc_macro2::Span::call_site());
                return quote!(::#ident);
            }
            Err(_) => {}
        }
    }
    quote!(::dispatcher_core)
}
