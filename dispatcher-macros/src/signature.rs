//! Checks of the annotated function's signature: what a task's parameters and return type may be.

use proc_macro2::TokenStream as TokenStream2;
use syn::spanned::Spanned;
use syn::{Error, FnArg, ItemFn, ReturnType, Type};

/// The type behind any number of references.
pub(crate) fn unreferenced(ty: &Type) -> &Type {
    match ty {
        Type::Reference(r) => unreferenced(&r.elem),
        Type::Paren(p) => unreferenced(&p.elem),
        Type::Group(g) => unreferenced(&g.elem),
        other => other,
    }
}

/// Whether `ty` names `TaskContext` (behind any references).
pub(crate) fn is_task_context(ty: &Type) -> bool {
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
pub(crate) fn check_context_param(arg: &FnArg) -> syn::Result<()> {
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
pub(crate) fn ok_type(ty: &Type) -> Option<&Type> {
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

pub(crate) fn returns_result(ret: &ReturnType) -> bool {
    match ret {
        ReturnType::Type(_, ty) => match &**ty {
            Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
        ReturnType::Default => false,
    }
}

/// Parses the item `#[task]` is on, with a clear error when it is not a function.
pub(crate) fn parse_function(item: TokenStream2) -> syn::Result<ItemFn> {
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
pub(crate) fn reference_message(r: &syn::TypeReference) -> String {
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
