//! `task`: hands the step to a worker process (DESIGN §8). Input `{"queue", "payload"?}`;
//! the step is `WAITING` while its task waits on the queue and a worker holds it, and
//! its output is what the worker completes it with.

/// The longest queue name.
pub const MAX_QUEUE_NAME: usize = 128;

/// Queue names travel in JSON bodies and metric labels: a short, plain set of characters.
pub fn valid_queue_name(name: &str) -> bool {
    (1..=MAX_QUEUE_NAME).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_short_and_plain() {
        for ok in ["build", "gpu.large", "team-a/deploy:eu_1"] {
            assert!(valid_queue_name(ok), "{ok}");
        }
        for bad in ["", "with space", "naïve", "a{b}", &"x".repeat(129)] {
            assert!(!valid_queue_name(bad), "{bad}");
        }
    }
}
