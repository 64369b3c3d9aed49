//! How functions are shown to people: `place(customer: string) -> result<…>`.

use crate::registry::Function;
use crate::values::type_name;

/// The parameter list: `customer: string, quantity: u32`.
pub fn params(f: &Function) -> String {
    f.params.iter().map(|(n, t)| format!("{n}: {}", type_name(t))).collect::<Vec<_>>().join(", ")
}

/// The whole signature: `name(params) -> result`.
pub fn signature(f: &Function) -> String {
    let results = f.results.iter().map(type_name).collect::<Vec<_>>();
    match results.as_slice() {
        [] => format!("{}({})", f.name, params(f)),
        [one] => format!("{}({}) -> {one}", f.name, params(f)),
        many => format!("{}({}) -> ({})", f.name, params(f), many.join(", ")),
    }
}
