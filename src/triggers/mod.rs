//! Triggers: what starts runs besides `POST /v1/runs` (DESIGN §10).
//!
//! - [`cron`]: cron expressions in a time zone, and their ticks across daylight saving.
//! - [`scheduler`]: the loop that fires due schedule ticks, exactly once across replicas
//!   (the tick is claimed in the commit that creates its run).
//! - [`webhook`]: signature checks of `POST /hooks/{name}` deliveries, the `request` scope
//!   and a trigger's compiled `context` and `filter`.
//!
//! Runs started here go through [`crate::engine::Engine::start_run`] like any other and
//! record what started them in `trigger`.

pub mod cron;
pub mod scheduler;
pub mod webhook;

pub use cron::{CronError, CronSchedule};
pub use scheduler::{Scheduler, SchedulerSettings};
pub use webhook::{Delivery, Mapping, RenderError};
