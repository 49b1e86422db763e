//! A per-layer filter that is asked about every span and event, never only
//! once per callsite.
//!
//! Hazard (tokio-rs/tracing#2519): with per-layer filters, tracing-subscriber
//! carries each filter's verdict from `enabled` to the span or event in a
//! thread-local. A callsite every filter accepts is cached as "always" and
//! skips `enabled`, so its event reads whatever the last `enabled` call on that
//! thread left behind. The `log` bridge asks `enabled` without sending a
//! record (`log::log_enabled!`, which sqlx asks after its queries), and the
//! next INFO line, such as `keygate serving`, vanished from the logs whenever
//! traces were exported. Capping the interest at "sometimes" makes every span
//! and event ask `enabled` first, so the verdict it reads is its own.

use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Filter};

/// `filter`, asked on every call.
pub struct UncachedFilter<F>(pub F);

impl<S, F: Filter<S>> Filter<S> for UncachedFilter<F> {
    fn enabled(&self, metadata: &Metadata<'_>, context: &Context<'_, S>) -> bool {
        self.0.enabled(metadata, context)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(metadata);
        if interest.is_always() {
            Interest::sometimes()
        } else {
            interest
        }
    }

    fn event_enabled(&self, event: &Event<'_>, context: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, context)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(
        &self,
        attributes: &span::Attributes<'_>,
        id: &span::Id,
        context: Context<'_, S>,
    ) {
        self.0.on_new_span(attributes, id, context);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, context: Context<'_, S>) {
        self.0.on_record(id, values, context);
    }

    fn on_enter(&self, id: &span::Id, context: Context<'_, S>) {
        self.0.on_enter(id, context);
    }

    fn on_exit(&self, id: &span::Id, context: Context<'_, S>) {
        self.0.on_exit(id, context);
    }

    fn on_close(&self, id: span::Id, context: Context<'_, S>) {
        self.0.on_close(id, context);
    }
}
