//! Procedural macros of ktstr.
//!
//! - [`macro@ktstr_test`]: turn `fn t(ctx: &Ctx) -> Result<AssertResult>` into a test that boots a VM.
//! - [`macro@ktstr_test_entry`]: register a hand-written `static KtstrTestEntry` the same way.
//! - [`declare_scheduler!`]: a named, registered `Scheduler` constant.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, ItemFn, Lit, Token};

mod constraints;
mod keys;

use keys::{Key, KeyKind, SCHEDULER_KEYS, TEST_KEYS};

/// One `key` or `key = value` of an attribute list.
struct Arg {
    key: Ident,
    value: Option<Expr>,
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        if input.peek(Token![::]) {
            return Err(syn::Error::new(
                key.span(),
                "paths are not keys: write `key = value`",
            ));
        }
        if input.peek(syn::token::Paren) {
            return Err(syn::Error::new(
                key.span(),
                format!("`{key}(..)` is not a form ktstr accepts: write `{key} = value`"),
            ));
        }
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(Arg { key, value })
    }
}

/// Parses `a = 1, b, c = [..]`, checking each key against `table`: unknown keys, duplicates,
/// bare values where a value is needed, and keys not implemented yet are compile errors.
fn parse_args<'k>(
    input: TokenStream2,
    table: &'k [Key],
    what: &str,
) -> syn::Result<Vec<(&'k Key, Ident, Option<Expr>)>> {
    let args = syn::parse::Parser::parse2(Punctuated::<Arg, Token![,]>::parse_terminated, input)?;
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for arg in args {
        let name = arg.key.to_string();
        let Some(key) = table.iter().find(|k| k.name == name) else {
            let valid: Vec<&str> = table.iter().map(|k| k.name).collect();
            let hint = keys::renamed(&name)
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            return Err(syn::Error::new(
                arg.key.span(),
                format!(
                    "unknown {what} key `{name}`{hint}; valid keys: {}",
                    valid.join(", ")
                ),
            ));
        };
        if seen.contains(&name) {
            return Err(syn::Error::new(
                arg.key.span(),
                format!("`{name}` given twice"),
            ));
        }
        seen.push(name.clone());
        if let Some(why) = key.unsupported {
            return Err(syn::Error::new(
                arg.key.span(),
                format!("`{name}` is a valid key that this ktstr does not act on yet: {why}"),
            ));
        }
        match (key.kind, &arg.value) {
            (KeyKind::Bool, None) | (KeyKind::Value, Some(_)) => {}
            (KeyKind::Bool, Some(v)) => {
                if !matches!(v, Expr::Lit(l) if matches!(l.lit, Lit::Bool(_))) {
                    return Err(syn::Error::new(
                        arg.key.span(),
                        format!("`{name}` takes `true` or `false` (or nothing, meaning true)"),
                    ));
                }
            }
            (KeyKind::Value, None) => {
                return Err(syn::Error::new(
                    arg.key.span(),
                    format!("`{name}` needs a value: `{name} = ..`"),
                ));
            }
        }
        out.push((key, arg.key, arg.value));
    }
    Ok(out)
}

fn bool_value(v: &Option<Expr>) -> bool {
    match v {
        None => true,
        Some(Expr::Lit(l)) => matches!(l.lit, Lit::Bool(ref b) if b.value),
        Some(_) => false,
    }
}

/// Marks `fn name(ctx: &Ctx) -> anyhow::Result<AssertResult>` as a ktstr test: it runs in a
/// VM with the topology, scheduler and checks the keys ask for. Unknown keys are errors that
/// list the valid ones.
#[proc_macro_attribute]
pub fn ktstr_test(attr: TokenStream, item: TokenStream) -> TokenStream {
    match ktstr_test_impl(attr.into(), item.into()) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn ktstr_test_impl(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let func: ItemFn = syn::parse2(item)?;
    let name = func.sig.ident.clone();
    if func.sig.inputs.len() != 1 {
        return Err(syn::Error::new(
            func.sig.ident.span(),
            "a ktstr test takes exactly one argument: `ctx: &Ctx`",
        ));
    }
    let args = parse_args(attr, TEST_KEYS, "ktstr_test")?;
    let inner = format_ident!("__ktstr_inner_{}", name);
    let entry = format_ident!("__KTSTR_ENTRY_{}", name.to_string().to_uppercase());
    let ctor = format_ident!("__KTSTR_CTOR_{}", name.to_string().to_uppercase());

    let mut fields = Vec::new();
    let mut asserts = Vec::new();
    let mut ignore = false;
    let mut flags = (false, false, false, false);
    let mut limits = Vec::new();
    for (key, ident, value) in &args {
        let v = value.as_ref();
        match key.name {
            "ignore" => ignore = bool_value(value),
            "expect_err" => flags.0 = bool_value(value),
            "host_only" => flags.1 = bool_value(value),
            "requires_smt" => {
                let on = bool_value(value);
                flags.2 = on;
                limits.push(quote!(requires_smt: #on));
            }
            k if constraints::is_constraint_key(k) => {
                limits.push(constraints::field(k, v.expect("a value key has a value")));
            }
            "kaslr" => {
                let on = bool_value(value);
                fields.push(quote!(kaslr: #on));
            }
            "auto_repro" => {
                if bool_value(value) {
                    return Err(syn::Error::new(
                        ident.span(),
                        "`auto_repro = true` asks for a probe re-run on a scheduler crash, \
                         which this ktstr does not do yet: write `auto_repro = false`",
                    ));
                }
            }
            "not_stuck" if bool_value(value) => asserts.push(quote!(.check_not_stuck())),
            "isolation" if bool_value(value) => asserts.push(quote!(.check_isolation())),
            "not_stuck" | "isolation" => {}
            "fail_on_rq_clock_stuck" => {
                let on = bool_value(value);
                asserts.push(quote!(.fail_on_rq_clock_stuck(#on)));
            }
            "num_snapshots" => fields.push(quote!(num_snapshots: #v)),
            "bpf_map_write" => match v {
                Some(Expr::Array(arr)) => {
                    let elems = arr.elems.iter();
                    fields.push(quote!(bpf_map_writes: &[#(#elems),*]))
                }
                _ => fields.push(quote!(bpf_map_writes: &[#v])),
            },
            "watch_bpf_maps" => match v {
                Some(Expr::Array(arr)) => {
                    let elems = arr.elems.iter();
                    fields.push(quote!(watch_bpf_maps: &[#(#elems),*]))
                }
                _ => fields.push(quote!(watch_bpf_maps: &[#v])),
            },
            "llcs" | "cores" | "threads" | "numa_nodes" => {
                let f = Ident::new(key.name, Span::call_site());
                fields.push(quote!(#f: ::core::option::Option::Some(#v)));
            }
            "memory_mib" | "duration_s" | "watchdog_timeout_s" => {
                let f = Ident::new(key.name, Span::call_site());
                fields.push(quote!(#f: ::core::option::Option::Some(#v)));
            }
            "scheduler" => fields.push(quote!(scheduler: &#v)),
            "payload" => fields.push(quote!(payload: ::core::option::Option::Some(&#v))),
            "staged_schedulers" | "workloads" => {
                let Some(Expr::Array(arr)) = v else {
                    return Err(syn::Error::new(
                        ident.span(),
                        format!("`{} = [A, B]` takes an array", key.name),
                    ));
                };
                let elems = arr.elems.iter();
                let f = Ident::new(key.name, Span::call_site());
                fields.push(quote!(#f: &[#(&#elems),*]));
            }
            "post_vm" => fields.push(quote!(post_vm: ::core::option::Option::Some(#v))),
            "post_vm_unconditional" => {
                fields.push(quote!(post_vm_unconditional: ::core::option::Option::Some(#v)))
            }
            "workload_root_cgroup" => {
                fields.push(quote!(workload_root_cgroup: ::core::option::Option::Some(#v)))
            }
            "expect_scx_bpf_error_contains" => {
                fields.push(quote!(expect_scx_bpf_error_contains: ::core::option::Option::Some(#v)))
            }
            "extra_sched_args" | "extra_include_files" => {
                let f = Ident::new(key.name, Span::call_site());
                fields.push(quote!(#f: &#v));
            }
            other => {
                // Assert overrides: the key is the Assert builder of the same name.
                let f = Ident::new(other, Span::call_site());
                asserts.push(quote!(.#f(#v)));
            }
        }
    }
    let (expect_err, host_only, _, _) = flags;
    // Constraints: the scheduler's, with the test's keys on top.
    let sched_arg = args.iter().find(|(k, _, _)| k.name == "scheduler");
    let sched_constraints = match sched_arg {
        Some((_, _, Some(s))) => quote!((#s).constraints),
        _ => quote!(::ktstr::test_support::Scheduler::EEVDF.constraints),
    };
    let lit = |k: &str| {
        let given = args.iter().find(|(key, _, _)| key.name == k);
        match given {
            Some((_, _, v)) => constraints::lit_int(v.as_ref()),
            // Without a scheduler the topology's defaults are Scheduler::EEVDF's.
            None if sched_arg.is_none() => Some(match k {
                "cores" => 2,
                _ => 1,
            }),
            None => None,
        }
    };
    constraints::check_literals(
        &args,
        [lit("numa_nodes"), lit("llcs"), lit("cores"), lit("threads")],
        sched_arg.is_none(),
        "the test's own topology",
    )?;
    let check = constraints::const_check(quote!(#entry.check_constraints()));
    let has_scx_expect = args
        .iter()
        .any(|(k, _, _)| k.name == "expect_scx_bpf_error_contains");
    if has_scx_expect && !expect_err {
        return Err(syn::Error::new(
            Span::call_site(),
            "`expect_scx_bpf_error_contains` needs `expect_err`",
        ));
    }
    if host_only {
        for bad in ["scheduler", "watchdog_timeout_s"] {
            if args.iter().any(|(k, _, _)| k.name == bad) {
                return Err(syn::Error::new(
                    Span::call_site(),
                    format!("`host_only` tests run without a VM and cannot take `{bad}`"),
                ));
            }
        }
        let snapshots = args.iter().any(|(k, _, v)| {
            k.name == "num_snapshots"
                && !matches!(v, Some(Expr::Lit(l)) if matches!(&l.lit, Lit::Int(i) if i.base10_digits() == "0"))
        });
        if snapshots {
            return Err(syn::Error::new(
                Span::call_site(),
                "`host_only` tests run without a VM and cannot take snapshots (`num_snapshots`)",
            ));
        }
    }
    let ignore_attr = ignore.then(|| quote!(#[ignore]));
    let name_str = name.to_string();
    let vis = &func.vis;
    let mut inner_fn = func.clone();
    inner_fn.sig.ident = inner.clone();
    inner_fn.vis = syn::Visibility::Inherited;
    let ctor_and_test = hook_and_test(&ctor, &entry, &name, &func.attrs, vis, ignore_attr);
    let host_ops = names_a_host_op(func.block.to_token_stream());

    Ok(quote! {
        #[allow(dead_code)]
        #inner_fn

        #[::ktstr::__private::linkme::distributed_slice(::ktstr::test_support::KTSTR_TESTS)]
        #[linkme(crate = ::ktstr::__private::linkme)]
        #[doc(hidden)]
        // A test giving every constraint key leaves nothing to its scheduler's.
        #[allow(clippy::needless_update)]
        static #entry: ::ktstr::test_support::KtstrTestEntry = ::ktstr::test_support::KtstrTestEntry {
            name: #name_str,
            module_path: ::core::module_path!(),
            func: #inner,
            assert: ::ktstr::prelude::Assert::NO_OVERRIDES #(#asserts)*,
            expect_err: #expect_err,
            host_only: #host_only,
            host_ops: #host_ops,
            ignore: #ignore,
            constraints: ::ktstr::test_support::TopologyConstraints {
                #(#limits,)*
                ..#sched_constraints
            },
            #(#fields,)*
            ..::ktstr::test_support::KtstrTestEntry::DEFAULT
        };

        #check

        #ctor_and_test
    })
}

/// Ops the host serves from its monitor (snapshots, kernel memory); a test body that names
/// one gets the monitor.
const HOST_OPS: [&str; 14] = [
    "capture_snapshot",
    "watch_snapshot",
    "write_kernel_hot",
    "write_kernel_hot_batch",
    "write_kernel_cold",
    "write_kernel_cold_batch",
    "read_kernel_hot",
    "read_kernel_cold",
    "CaptureSnapshot",
    "WatchSnapshot",
    "WriteKernelHot",
    "WriteKernelCold",
    "ReadKernelHot",
    "ReadKernelCold",
];

/// Whether `tokens` name one of [`HOST_OPS`] anywhere.
fn names_a_host_op(tokens: TokenStream2) -> bool {
    tokens.into_iter().any(|t| match t {
        proc_macro2::TokenTree::Ident(i) => HOST_OPS.iter().any(|op| i == op),
        proc_macro2::TokenTree::Group(g) => names_a_host_op(g.stream()),
        _ => false,
    })
}

/// The `.init_array` hook that makes the test binary guest init (or one test body in the
/// guest), and the `#[test] fn` that runs `entry` in a VM.
fn hook_and_test(
    ctor: &Ident,
    entry: &Ident,
    test: &Ident,
    attrs: &[syn::Attribute],
    vis: &syn::Visibility,
    ignore: Option<TokenStream2>,
) -> TokenStream2 {
    quote! {
        // Runs before main: as PID 1 this binary is the guest's init; with
        // `--ktstr-test NAME` it runs one test body in the guest.
        #[used]
        #[doc(hidden)]
        #[link_section = ".init_array"]
        static #ctor: extern "C" fn() = {
            extern "C" fn __ktstr_early() {
                ::ktstr::test_support::early_dispatch();
            }
            __ktstr_early
        };

        #(#attrs)*
        #[test]
        #ignore
        #vis fn #test() {
            ::ktstr::test_support::run_ktstr_test(&#entry);
        }
    }
}

/// `#[ktstr_test_entry] static NAME: KtstrTestEntry = KtstrTestEntry { .. };` registers a
/// hand-written entry as `#[ktstr_test]` registers its own: in `KTSTR_TESTS`, with the guest
/// hook and a `#[test] fn name()` (the static's name in lowercase) that boots it. The
/// entry's `name` field must be unique in the binary.
#[proc_macro_attribute]
pub fn ktstr_test_entry(attr: TokenStream, item: TokenStream) -> TokenStream {
    match ktstr_test_entry_impl(attr.into(), item.into()) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn ktstr_test_entry_impl(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    if !attr.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            "`#[ktstr_test_entry]` takes no arguments: the entry's fields say everything",
        ));
    }
    let item: syn::ItemStatic = syn::parse2(item)?;
    if !matches!(item.mutability, syn::StaticMutability::None) {
        return Err(syn::Error::new(
            item.ident.span(),
            "a test entry is an immutable `static`",
        ));
    }
    let ident = &item.ident;
    let upper = ident.to_string().to_uppercase();
    let test = format_ident!("{}", ident.to_string().to_lowercase());
    let ctor = format_ident!("__KTSTR_CTOR_{}", upper);
    let hook = hook_and_test(&ctor, ident, &test, &[], &item.vis, None);
    let (attrs, vis, ty, expr) = (&item.attrs, &item.vis, &item.ty, &item.expr);
    let check = constraints::const_check(quote!(#ident.check_constraints()));
    Ok(quote! {
        #(#attrs)*
        #[::ktstr::__private::linkme::distributed_slice(::ktstr::test_support::KTSTR_TESTS)]
        #[linkme(crate = ::ktstr::__private::linkme)]
        #vis static #ident: #ty = #expr;

        #check

        #hook
    })
}

/// `declare_scheduler!(NAME, { name = "x", binary = "scx_x", topology = (1, 2, 4, 2), sched_args = [..] })`:
/// a `pub static NAME: Scheduler` built from the keys, registered in `KTSTR_SCHEDULERS`.
#[proc_macro]
pub fn declare_scheduler(input: TokenStream) -> TokenStream {
    match declare_scheduler_impl(input.into()) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct SchedDecl {
    vis: syn::Visibility,
    name: Ident,
    body: TokenStream2,
}

impl Parse for SchedDecl {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let vis = input.parse()?;
        let name = input.parse()?;
        input.parse::<Token![,]>()?;
        let content;
        syn::braced!(content in input);
        let body = content.parse()?;
        let _ = input.parse::<Option<Token![,]>>()?;
        Ok(SchedDecl { vis, name, body })
    }
}

fn declare_scheduler_impl(input: TokenStream2) -> syn::Result<TokenStream2> {
    let decl: SchedDecl = syn::parse2(input)?;
    let ident = decl.name.to_string();
    if ident != ident.to_uppercase() {
        return Err(syn::Error::new(
            decl.name.span(),
            "a scheduler's NAME is SCREAMING_SNAKE_CASE",
        ));
    }
    if ident == "EEVDF" || ident == "KERNEL_DEFAULT" {
        return Err(syn::Error::new(
            decl.name.span(),
            "EEVDF and KERNEL_DEFAULT are reserved",
        ));
    }
    let args = parse_args(decl.body, SCHEDULER_KEYS, "declare_scheduler")?;
    let get = |k: &str| args.iter().find(|(key, _, _)| key.name == k);
    let Some((_, _, Some(name))) = get("name") else {
        return Err(syn::Error::new(
            decl.name.span(),
            "`name = \"..\"` is required",
        ));
    };
    let sources = ["binary", "binary_path"]
        .iter()
        .filter(|k| get(k).is_some())
        .count();
    if sources != 1 {
        return Err(syn::Error::new(
            decl.name.span(),
            "give exactly one of `binary = \"name\"` (discovered) or `binary_path = \"/abs/path\"`",
        ));
    }
    let mut chain = vec![quote!(::ktstr::test_support::Scheduler::named(#name))];
    // A whole `constraints = ..` first, so that single constraint keys refine it.
    if let Some((_, _, Some(c))) = get("constraints") {
        chain.push(quote!(.constraints(#c)));
    }
    let topo = match get("topology") {
        Some((_, _, Some(Expr::Tuple(t)))) if t.elems.len() == 4 => {
            let e: Vec<Option<u64>> = t
                .elems
                .iter()
                .map(|e| constraints::lit_int(Some(e)))
                .collect();
            [e[0], e[1], e[2], e[3]]
        }
        Some(_) => [None; 4],
        None => [Some(1), Some(1), Some(2), Some(1)],
    };
    constraints::check_literals(
        &args,
        topo,
        get("constraints").is_none(),
        "the scheduler's topology",
    )?;
    for (key, _, value) in &args {
        let v = value.as_ref();
        chain.push(match key.name {
            "name" | "constraints" => continue,
            "requires_smt" => {
                let on = bool_value(value);
                quote!(.requires_smt(#on))
            }
            "binary" => quote!(.binary_discover(#v)),
            "binary_path" => {
                quote!(.binary(::ktstr::test_support::SchedulerSpec::Path(#v)))
            }
            "topology" => {
                let Some(Expr::Tuple(t)) = v else {
                    return Err(syn::Error::new(
                        key_span(&args, "topology"),
                        "`topology = (numa_nodes, llcs, cores, threads)`",
                    ));
                };
                if t.elems.len() != 4 {
                    return Err(syn::Error::new(
                        key_span(&args, "topology"),
                        "`topology` takes 4 numbers: (numa_nodes, llcs, cores, threads)",
                    ));
                }
                let e: Vec<&Expr> = t.elems.iter().collect();
                let (a, b, c, d) = (e[0], e[1], e[2], e[3]);
                quote!(.topology(#a, #b, #c, #d))
            }
            "sched_args" => quote!(.sched_args(&#v)),
            "cgroup_parent" => quote!(.cgroup_parent(#v)),
            "sysctls" | "kargs" => {
                let f = Ident::new(key.name, Span::call_site());
                quote!(.#f(&#v))
            }
            "assert" => quote!(.assert(#v)),
            other => {
                let f = Ident::new(other, Span::call_site());
                quote!(.#f(#v))
            }
        });
    }
    let vis = decl.vis;
    let ident = decl.name;
    let doc = format!("Scheduler `{ident}`, declared with `declare_scheduler!`.");
    let entry = format_ident!("__KTSTR_SCHEDULER_{}", ident);
    let check = constraints::const_check(quote!(#ident.check_constraints()));
    Ok(quote! {
        #[doc = #doc]
        #vis static #ident: ::ktstr::test_support::Scheduler = #(#chain)*;

        #check

        #[::ktstr::__private::linkme::distributed_slice(::ktstr::test_support::KTSTR_SCHEDULERS)]
        #[linkme(crate = ::ktstr::__private::linkme)]
        #[doc(hidden)]
        static #entry: &::ktstr::test_support::Scheduler = &#ident;
    })
}

fn key_span(args: &[(&Key, Ident, Option<Expr>)], name: &str) -> Span {
    args.iter()
        .find(|(k, _, _)| k.name == name)
        .map(|(_, i, _)| i.span())
        .unwrap_or_else(Span::call_site)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(attr: &str) -> Result<String, String> {
        let item: TokenStream2 = "fn t(ctx: &Ctx) -> Result<AssertResult> { todo!() }"
            .parse()
            .unwrap();
        ktstr_test_impl(attr.parse().unwrap(), item)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn unknown_keys_list_the_valid_ones() {
        let e = expand("llcs = 1, bogus = 2").unwrap_err();
        assert!(e.contains("unknown ktstr_test key `bogus`"), "{e}");
        for k in [
            "llcs",
            "memory_mib",
            "duration_s",
            "not_stuck",
            "post_vm",
            "host_only",
        ] {
            assert!(e.contains(k), "{k} missing from: {e}");
        }
        let e = expand("workers_per_cgroup = 2").unwrap_err();
        assert!(e.contains("CgroupDef::workers(N)"), "{e}");
    }

    #[test]
    fn keys_not_acted_on_are_errors_not_silence() {
        for attr in ["auto_repro", "auto_repro = true"] {
            let e = expand(attr).unwrap_err();
            assert!(e.contains("not") && e.contains("yet"), "{attr}: {e}");
        }
        assert!(expand("auto_repro = false, num_snapshots = 0").is_ok());
        assert!(expand("num_snapshots = 12").is_ok());
        let one = expand("bpf_map_write = W").unwrap();
        assert!(one.contains("bpf_map_writes : & [W]"), "{one}");
        let two = expand("bpf_map_write = [W, X]").unwrap();
        assert!(two.contains("bpf_map_writes : & [W , X]"), "{two}");
        let body = |b: &str| names_a_host_op(b.parse().unwrap());
        assert!(body(
            "{ execute_steps(ctx, vec![Step::with_op(Op::capture_snapshot(\"x\"), h)]) }"
        ));
        assert!(body("{ let o = Op::WriteKernelCold { writes }; }"));
        assert!(!body("{ execute_defs(ctx, defs) /* capture_snapshot */ }"));
        assert!(expand("host_only, num_snapshots = 2")
            .unwrap_err()
            .contains("snapshots"));
        assert!(expand("host_only, num_snapshots = 0").is_ok());
    }

    #[test]
    fn malformed_keys_are_errors() {
        assert!(expand("llcs = 1, llcs = 2").unwrap_err().contains("twice"));
        assert!(expand("llcs").unwrap_err().contains("needs a value"));
        assert!(expand("not_stuck = 3").unwrap_err().contains("true"));
        assert!(expand("a::b = 1").is_err());
        assert!(expand("expect_scx_bpf_error_contains = \"x\"")
            .unwrap_err()
            .contains("expect_err"));
        assert!(expand("host_only, scheduler = S")
            .unwrap_err()
            .contains("host_only"));
    }

    #[test]
    fn values_land_in_the_entry() {
        let out =
            expand("llcs = 2, cores = 4, duration_s = 3, not_stuck, max_gap_ms = 900, ignore")
                .unwrap();
        assert!(
            out.contains("llcs : :: core :: option :: Option :: Some (2)"),
            "{out}"
        );
        assert!(out.contains("check_not_stuck ()"));
        assert!(out.contains("max_gap_ms (900)"));
        assert!(out.contains("# [ignore]"));
        let out = expand("post_vm_unconditional = check").unwrap();
        assert!(
            out.contains("post_vm_unconditional : :: core :: option :: Option :: Some (check)"),
            "{out}"
        );
        let out = expand("kaslr = false").unwrap();
        assert!(out.contains("kaslr : false"), "{out}");
        assert!(expand("kaslr").unwrap().contains("kaslr : true"));
        assert!(out.contains("__ktstr_inner_t"));
        assert!(out.contains("early_dispatch"));
    }

    #[test]
    fn constraint_keys_land_over_the_schedulers() {
        let out = expand(
            "llcs = 2, cores = 2, threads = 2, min_llcs = 2, max_llcs = 4, max_cpus = 8, requires_smt",
        )
        .unwrap();
        assert!(out.contains("min_llcs : 2"), "{out}");
        assert!(
            out.contains("max_cpus : :: core :: option :: Option :: Some (8)"),
            "{out}"
        );
        assert!(
            out.contains("max_llcs : :: core :: option :: Option :: Some (4)"),
            "{out}"
        );
        assert!(out.contains("requires_smt : true"), "{out}");
        assert!(out.contains(".. :: ktstr :: test_support :: Scheduler :: EEVDF . constraints"));
        // With a scheduler, the rest come from its constraints.
        let out = expand("scheduler = MY_SCHED, min_cpus = 2").unwrap();
        assert!(out.contains(".. (MY_SCHED) . constraints"), "{out}");
        // What literals cannot show is checked in a const of the finished entry.
        assert!(
            out.contains("const _ : () = if let :: core :: result :: Result :: Err (why) = __KTSTR_ENTRY_T . check_constraints ()"),
            "{out}"
        );
        assert!(expand("min_numa_nodes = 2, max_numa_nodes = 2, numa_nodes = 2, llcs = 2").is_ok());
    }

    #[test]
    fn impossible_constraints_are_compile_errors() {
        let e = expand("min_llcs = 4, max_llcs = 2").unwrap_err();
        assert!(e.contains("`min_llcs = 4` is above `max_llcs = 2`"), "{e}");
        let e = expand("min_cpus = 200").unwrap_err();
        assert!(
            e.contains("`min_cpus = 200` is above `max_cpus = 192` (the default)"),
            "{e}"
        );
        // Without a scheduler the defaults are known; with one they are its, unseen here.
        assert!(expand("scheduler = S, min_cpus = 200").is_ok());
        let e = expand("min_numa_nodes = 0").unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = expand("max_numa_nodes = 2, min_numa_nodes = 3").unwrap_err();
        assert!(
            e.contains("`min_numa_nodes = 3` is above `max_numa_nodes = 2`"),
            "{e}"
        );
    }

    #[test]
    fn a_topology_outside_its_constraints_is_a_compile_error() {
        let e = expand("llcs = 4, max_llcs = 2").unwrap_err();
        assert_eq!(
            e,
            "the test's own topology has 4 LLCs, more than `max_llcs = 2`: raise `max_llcs`"
        );
        let e = expand("numa_nodes = 2, llcs = 2").unwrap_err();
        assert!(
            e.contains("2 NUMA nodes, more than `max_numa_nodes = 1` (the default)"),
            "{e}"
        );
        // CPUs: LLCs x cores x threads, the default cores (2) counted.
        let e = expand("llcs = 2, threads = 2, max_cpus = 4").unwrap_err();
        assert!(e.contains("8 CPUs, more than `max_cpus = 4`"), "{e}");
        let e = expand("min_cpus = 4").unwrap_err();
        assert!(e.contains("has 2 CPUs, fewer than `min_cpus = 4`"), "{e}");
        let e = expand("min_llcs = 2").unwrap_err();
        assert!(e.contains("has 1 LLCs, fewer than `min_llcs = 2`"), "{e}");
        assert!(expand("llcs = 2, cores = 2, min_cpus = 4, max_cpus = 4").is_ok());
        // With a scheduler, dimensions the test leaves to it are unknown here.
        assert!(expand("scheduler = S, min_cpus = 64").is_ok());
        assert!(expand("scheduler = S, llcs = 4, max_llcs = 2").is_err());
        // requires_smt on a topology without SMT stays a skip at run time.
        assert!(expand("requires_smt").is_ok());
    }

    #[test]
    fn test_entry_registers_a_static() {
        let item = "static MY_ENTRY: KtstrTestEntry = KtstrTestEntry { name: \"x\", ..KtstrTestEntry::DEFAULT };";
        let ok = ktstr_test_entry_impl(TokenStream2::new(), item.parse().unwrap())
            .unwrap()
            .to_string();
        assert!(
            ok.contains("KTSTR_TESTS") && ok.contains("fn my_entry ()"),
            "{ok}"
        );
        assert!(ok.contains("run_ktstr_test (& MY_ENTRY)"), "{ok}");
        let e = ktstr_test_entry_impl("x".parse().unwrap(), item.parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("no arguments"));
        let m = "static mut M: KtstrTestEntry = KtstrTestEntry::DEFAULT;";
        let e = ktstr_test_entry_impl(TokenStream2::new(), m.parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("immutable"));
    }

    #[test]
    fn declare_scheduler_checks_its_keys() {
        let ok = declare_scheduler_impl(
            "pub MY_SCHED, { name = \"x\", binary = \"scx_x\", topology = (1, 2, 4, 2), sched_args = [\"-v\"] }"
                .parse()
                .unwrap(),
        )
        .unwrap()
        .to_string();
        assert!(
            ok.contains("binary_discover (\"scx_x\")")
                && ok.contains("topology (1 , 2 , 4 , 2)")
                && ok.contains("KTSTR_SCHEDULERS"),
            "{ok}"
        );
        let bad = |s: &str| {
            declare_scheduler_impl(s.parse().unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(bad("my_sched, { name = \"x\", binary = \"y\" }").contains("SCREAMING"));
        assert!(bad("EEVDF, { name = \"x\", binary = \"y\" }").contains("reserved"));
        assert!(bad("S, { binary = \"y\" }").contains("required"));
        assert!(bad("S, { name = \"x\" }").contains("exactly one"));
        assert!(
            bad("S, { name = \"x\", binary = \"y\", topology = (1, 2) }").contains("4 numbers")
        );
        assert!(bad("S, { name = \"x\", binary = \"y\", kernels = [] }").contains("not"));
    }

    #[test]
    fn declare_scheduler_takes_constraints() {
        let ok = declare_scheduler_impl(
            "S, { name = \"x\", binary = \"y\", max_llcs = 4, requires_smt, constraints = C, topology = (1, 2, 2, 2) }"
                .parse()
                .unwrap(),
        )
        .unwrap()
        .to_string();
        // The whole set first, whatever the order, then the single keys on top.
        let c = ok.find(". constraints (C)").expect(&ok);
        let l = ok.find(". max_llcs (4)").expect(&ok);
        assert!(c < l, "{ok}");
        assert!(ok.contains(". requires_smt (true)"), "{ok}");
        assert!(ok.contains("S . check_constraints ()"), "{ok}");
        let bad = |s: &str| {
            declare_scheduler_impl(s.parse().unwrap())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad("S, { name = \"x\", binary = \"y\", topology = (1, 4, 2, 1), max_llcs = 2 }"),
            "the scheduler's topology has 4 LLCs, more than `max_llcs = 2`: raise `max_llcs`"
        );
        assert!(
            bad("S, { name = \"x\", binary = \"y\", min_cpus = 8, max_cpus = 4 }")
                .contains("`min_cpus = 8` is above `max_cpus = 4`")
        );
        assert!(
            bad("S, { name = \"x\", binary = \"y\", topology = (2, 2, 2, 1) }")
                .contains("2 NUMA nodes, more than `max_numa_nodes = 1` (the default)")
        );
        // A whole `constraints` set hides the bounds from the macro: the const check has them.
        assert!(declare_scheduler_impl(
            "S, { name = \"x\", binary = \"y\", topology = (2, 2, 2, 1), constraints = C }"
                .parse()
                .unwrap()
        )
        .is_ok());
    }
}
