//! Topology constraint keys (`min_numa_nodes` .. `max_cpus`, `requires_smt`): what they
//! emit, and the errors the macros can see in literals. What literals cannot show (a
//! scheduler's topology or constraints) a `const` check of the finished entry catches.

use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{Expr, Ident, Lit};

use crate::keys::Key;

/// The integer constraint keys, in (min, max) pairs, with what they count.
pub const PAIRS: [(&str, &str, &str); 3] = [
    ("min_numa_nodes", "max_numa_nodes", "NUMA nodes"),
    ("min_llcs", "max_llcs", "LLCs"),
    ("min_cpus", "max_cpus", "CPUs"),
];

/// `TopologyConstraints::DEFAULT`'s (min, max) for each pair of [`PAIRS`].
const DEFAULTS: [(u64, u64); 3] = [(1, 1), (1, 12), (1, 192)];

/// True for a key this module handles.
pub fn is_constraint_key(name: &str) -> bool {
    name == "requires_smt" || PAIRS.iter().any(|(a, b, _)| *a == name || *b == name)
}

/// The `TopologyConstraints` field a key sets: `min_x: v`, `max_x: Some(v)`.
pub fn field(name: &str, value: &Expr) -> TokenStream2 {
    let f = Ident::new(name, Span::call_site());
    if name.starts_with("max_") {
        quote!(#f: ::core::option::Option::Some(#value))
    } else {
        quote!(#f: #value)
    }
}

/// An integer literal's value.
pub fn lit_int(e: Option<&Expr>) -> Option<u64> {
    match e? {
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) => i.base10_parse().ok(),
            _ => None,
        },
        Expr::Group(g) => lit_int(Some(&g.expr)),
        _ => None,
    }
}

/// Checks what literals show: a minimum of 0, a minimum above its maximum, and a topology
/// outside the bounds. `topology` is (NUMA nodes, LLCs in all, cores, threads), each known
/// or not; `defaults_known` says the constraints not given are `TopologyConstraints::DEFAULT`
/// (no scheduler to inherit from). `what` names the topology in messages.
pub fn check_literals(
    args: &[(&Key, Ident, Option<Expr>)],
    topology: [Option<u64>; 4],
    defaults_known: bool,
    what: &str,
) -> syn::Result<()> {
    let get = |k: &str| args.iter().find(|(key, _, _)| key.name == k);
    // Where a bound the test did not give (a default) is broken: at the topology's keys.
    let topo_span = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| get(k))
            .map_or_else(Span::call_site, |(_, ident, _)| ident.span())
    };
    let dim_keys: [&[&str]; 3] = [
        &["numa_nodes", "topology"],
        &["llcs", "topology"],
        &["llcs", "cores", "threads", "topology"],
    ];
    let [nodes, llcs, cores, threads] = topology;
    let cpus = match (llcs, cores, threads) {
        (Some(l), Some(c), Some(t)) => Some(l * c * t),
        _ => None,
    };
    for (i, (min_key, max_key, noun)) in PAIRS.iter().enumerate() {
        let given = |k: &str| get(k).map(|(_, ident, v)| (ident.span(), lit_int(v.as_ref())));
        let (min_arg, max_arg) = (given(min_key), given(max_key));
        if let Some((span, Some(0))) = min_arg {
            return Err(syn::Error::new(span, format!("`{min_key}` is at least 1")));
        }
        let known = |arg: Option<(Span, Option<u64>)>, default: u64| match arg {
            Some((_, v)) => v,
            None => defaults_known.then_some(default),
        };
        let (dmin, dmax) = DEFAULTS[i];
        let min = known(min_arg, dmin);
        let max = known(max_arg, dmax);
        let span = |a: Option<(Span, Option<u64>)>, b: Option<(Span, Option<u64>)>| {
            a.or(b).map_or_else(Span::call_site, |(s, _)| s)
        };
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi && (min_arg.is_some() || max_arg.is_some()) {
                let how = |arg: Option<(Span, Option<u64>)>| {
                    if arg.is_some() {
                        ""
                    } else {
                        " (the default)"
                    }
                };
                return Err(syn::Error::new(
                    span(min_arg, max_arg),
                    format!(
                        "`{min_key} = {lo}`{} is above `{max_key} = {hi}`{}: no topology has \
                         both; raise `{max_key}` too",
                        how(min_arg),
                        how(max_arg)
                    ),
                ));
            }
        }
        let have = [nodes, llcs, cpus][i];
        if let Some(n) = have {
            if let Some(lo) = min.filter(|lo| n < *lo) {
                return Err(syn::Error::new(
                    span(min_arg, max_arg),
                    format!("{what} has {n} {noun}, fewer than `{min_key} = {lo}`"),
                ));
            }
            if let Some(hi) = max.filter(|hi| n > *hi) {
                let at = match max_arg {
                    Some((s, _)) => s,
                    None => topo_span(dim_keys[i]),
                };
                return Err(syn::Error::new(
                    at,
                    format!(
                        "{what} has {n} {noun}, more than `{max_key} = {hi}`{}: raise `{max_key}`",
                        if max_arg.is_none() {
                            " (the default)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A `const` that fails to compile when `check` (an expression of type
/// `Result<(), &'static str>`) is an error: for what the literals did not show.
pub fn const_check(check: TokenStream2) -> TokenStream2 {
    quote! {
        const _: () = if let ::core::result::Result::Err(why) = #check {
            ::core::panic!("{}", why)
        };
    }
}
