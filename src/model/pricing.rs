//! What a model call cost: prices per model from the provider's config, in USD per
//! million tokens, applied to a call's usage. Pure, so the arithmetic is unit tested.
//!
//! ```toml
//! [providers.cheap.models."qwen/qwen3-235b-a22b"]
//! input_per_mtok = 0.2
//! output_per_mtok = 0.6
//! cached_input_per_mtok = 0.05   # optional; cached prompt tokens cost input otherwise
//! ```
//!
//! The builtin provider's models cost nothing. A call on a model with no price is
//! counted as unpriced, and a session (or tree) with an unpriced call has no known cost.

use std::collections::HashMap;

use super::{ModelRef, Usage};

/// USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Cached prompt tokens; `None` charges them as input.
    pub cached_input_per_mtok: Option<f64>,
}

impl Price {
    pub const FREE: Price = Price { input_per_mtok: 0.0, output_per_mtok: 0.0, cached_input_per_mtok: None };

    /// The cost of `usage` at this price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_prompt_tokens.min(usage.prompt_tokens);
        let fresh = usage.prompt_tokens - cached;
        let per_token = |per_mtok: f64| per_mtok / 1_000_000.0;
        fresh as f64 * per_token(self.input_per_mtok)
            + cached as f64 * per_token(self.cached_input_per_mtok.unwrap_or(self.input_per_mtok))
            + usage.completion_tokens as f64 * per_token(self.output_per_mtok)
    }
}

/// Prices by full model ref (`provider/model`).
#[derive(Clone, Debug, Default)]
pub struct Pricing(HashMap<String, Price>);

impl Pricing {
    pub fn insert(&mut self, model: &str, price: Price) {
        self.0.insert(model.to_string(), price);
    }

    pub fn price(&self, model: &ModelRef) -> Option<Price> {
        if model.provider() == crate::config::BUILTIN_PROVIDER {
            return Some(Price::FREE);
        }
        self.0.get(model.as_str()).copied()
    }

    /// Record one call's cost on its usage: priced, or counted as unpriced.
    pub fn charge(&self, model: &ModelRef, usage: &mut Usage) {
        match self.price(model) {
            Some(price) => usage.cost_usd += price.cost(usage),
            None => usage.unpriced_calls = usage.unpriced_calls.saturating_add(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, cached: u64, completion: u64) -> Usage {
        Usage { prompt_tokens: prompt, cached_prompt_tokens: cached, completion_tokens: completion, ..Usage::default() }
    }

    #[test]
    fn cost_is_tokens_times_price_per_million_with_cached_input_cheaper() {
        let price = Price { input_per_mtok: 0.2, output_per_mtok: 0.6, cached_input_per_mtok: Some(0.05) };
        let cost = price.cost(&usage(1_000_000, 400_000, 500_000));
        assert!((cost - (0.6 * 0.2 + 0.4 * 0.05 + 0.5 * 0.6)).abs() < 1e-12, "{cost}");
        let no_cache_price = Price { cached_input_per_mtok: None, ..price };
        assert!((no_cache_price.cost(&usage(1_000_000, 400_000, 0)) - 0.2).abs() < 1e-12);
        assert!((price.cost(&usage(10, 50, 0)) - 10.0 * 0.05 / 1e6).abs() < 1e-15, "cached never exceeds prompt");
    }

    #[test]
    fn builtin_is_free_and_unknown_models_are_unpriced() {
        let mut pricing = Pricing::default();
        pricing.insert("cheap/qwen", Price { input_per_mtok: 1.0, output_per_mtok: 2.0, cached_input_per_mtok: None });
        let mut spent = usage(1000, 0, 1000);
        pricing.charge(&ModelRef::parse("cheap/qwen").unwrap(), &mut spent);
        assert!((spent.cost_usd - 0.003).abs() < 1e-12);
        pricing.charge(&ModelRef::parse("builtin/brain").unwrap(), &mut spent);
        assert_eq!(spent.unpriced_calls, 0);
        pricing.charge(&ModelRef::parse("other/model").unwrap(), &mut spent);
        assert_eq!(spent.unpriced_calls, 1);
        assert_eq!(spent.known_cost(), None);
    }
}
