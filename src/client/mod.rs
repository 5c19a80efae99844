//! The command-line client (DESIGN §13): subcommands of the `orchestrator` binary that drive
//! a running server over its HTTP API, and nothing else: no configuration file, no store.
//!
//! `http` is the one place that speaks HTTP and names errors, `output` and `listing` print,
//! `follow` streams a run's log with resume, and each group of subcommands has its file:
//! `workflows` (apply), `runs` (run, runs, get), `search` (the filters of runs), `decide`
//! (approve, reject, cancel, event), `curate` (retry with edits, delete, archive, the
//! workflows listing), `logs`, `triggers` (schedules, triggers), `events` (the events feed),
//! `server` (status), `queues` (queues, workers), `worker` and `exec` (the shipped worker);
//! `input` reads JSON arguments.
//! Exit codes: 0 done, 1 the server refused or the run failed or was canceled, 2 a usage or
//! connection error.

mod completions;
mod curate;
mod decide;
mod events;
mod exec;
mod follow;
mod http;
mod input;
mod listing;
mod logs;
mod output;
mod queues;
mod runs;
mod search;
mod server;
mod triggers;
mod worker;
mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use http::{Api, ClientError, Problem};
pub use output::Format;

/// Default server URL (`--server`, `ORCHESTRATOR_URL`).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8100";

/// Options of every client subcommand, accepted before or after it.
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        help_heading = "Client options",
        env = "ORCHESTRATOR_URL",
        default_value = DEFAULT_SERVER,
        value_name = "URL"
    )]
    pub server: String,
    /// The API token, sent as `Authorization: Bearer <token>`.
    #[arg(
        long,
        global = true,
        help_heading = "Client options",
        env = "ORCHESTRATOR_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Output for people (`table`) or for scripts (`json`).
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        help_heading = "Client options",
        value_enum,
        default_value_t = Format::Table
    )]
    pub output: Format,
}

/// The client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create workflows from files, or add a version when a definition changed.
    #[command(
        after_help = "Each file is JSON or YAML; a directory applies every *.json, *.yaml \
        and *.yml in it. A file matches a stored workflow by its `id`, else by its `name`.\n\n\
        Example:\n  orchestrator apply workflows/\n  orchestrator apply greet.yaml deploy.json"
    )]
    Apply {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Start a run of a workflow (by id); optionally wait for it or follow its log.
    #[command(
        after_help = "--wait and --follow exit 0 when the run SUCCEEDED, 1 when it \
        FAILED or was CANCELED, 2 on a usage or connection error.\n\n\
        Example:\n  orchestrator run greet --context '{\"who\": \"ada\"}' --follow\n  \
        orchestrator run deploy --context @ctx.json --version 3 --wait"
    )]
    Run(runs::RunArgs),
    /// List runs, newest first, filtered.
    #[command(
        after_help = "Example:\n  orchestrator runs --workflow greet --status failed --limit 10\n  \
        orchestrator runs --status failed,waiting_approval --since 2d --context customer=acme\n  \
        orchestrator runs --version 3 --trigger schedule --until 2024-05-01T00:00:00Z"
    )]
    Runs(runs::ListArgs),
    /// List workflows (the latest version of each), newest first.
    #[command(after_help = "Example:\n  orchestrator workflows --name-prefix billing- --archived")]
    Workflows(curate::WorkflowsArgs),
    /// Show a run: status, steps, approvals.
    #[command(after_help = "Example:\n  orchestrator get run_01J2Z3X4Y5W6V7T8S9R0QPNMKJ -o json")]
    Get {
        #[arg(value_name = "RUN")]
        run: String,
    },
    /// Print a run's log; with -f, follow it until the run ends.
    #[command(after_help = "Example:\n  orchestrator logs run_01J2Z3X4Y5W6V7T8S9R0QPNMKJ -f")]
    Logs {
        #[arg(value_name = "RUN")]
        run: String,
        /// Follow the log live until the run ends (resumes after a dropped connection).
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Approve the step a run waits for; the run resumes.
    #[command(
        after_help = "Example:\n  orchestrator approve run_01J2Z3X4Y5W6V7T8S9R0QPNMKJ \
        --comment 'looks good' --input '{\"ticket\": \"OPS-12\"}'"
    )]
    Approve(decide::ApproveArgs),
    /// Reject the step a run waits for; the run ends FAILED.
    #[command(
        after_help = "Example:\n  orchestrator reject run_01J2Z3X4Y5W6V7T8S9R0QPNMKJ --comment 'not today'"
    )]
    Reject(decide::RejectArgs),
    /// Cancel a run; calls in flight are aborted.
    #[command(after_help = "Example:\n  orchestrator cancel run_01J2Z3X4Y5W6V7T8S9R0QPNMKJ")]
    Cancel {
        #[arg(value_name = "RUN")]
        run: String,
    },
    /// Run a finished run again: from its first failed step, or from any step, with
    /// context members set or on another version. Earlier attempts stay on the run.
    #[command(
        after_help = "--wait and --follow exit 0 when the run SUCCEEDED, 1 otherwise.\n\n\
        Example:\n  orchestrator retry run_01J2Z3X4Y5W6V7T8S9R0QPNMKJ\n  \
        orchestrator retry run_01J2Z3X4Y5W6V7T8S9R0QPNMKJ --from-step deploy \
        --context '{\"region\": \"eu\"}' --version 4 --reason 'fixed the region' --follow"
    )]
    Retry(curate::RetryArgs),
    /// Delete a finished run with its steps, log and events.
    #[command(after_help = "Example:\n  orchestrator delete run_01J2Z3X4Y5W6V7T8S9R0QPNMKJ")]
    Delete {
        #[arg(value_name = "RUN")]
        run: String,
    },
    /// Archive a workflow: hidden from lists, no new runs; its runs and versions stay.
    #[command(after_help = "Example:\n  orchestrator archive wf_01J2Z3X4Y5W6V7T8S9R0QPNMKJ")]
    Archive {
        #[arg(value_name = "WORKFLOW")]
        workflow: String,
    },
    /// Send a named event to a run (a step may be waiting for it).
    #[command(
        after_help = "Example:\n  orchestrator event run_01J2Z3X4Y5W6V7T8S9R0QPNMKJ ci-done \
        --data '{\"build\": \"ok\"}'"
    )]
    Event(decide::EventArgs),
    /// List schedules; pause, resume or trigger one now.
    #[command(
        after_help = "Example:\n  orchestrator schedules\n  orchestrator schedules pause nightly\n  \
        orchestrator schedules resume nightly\n  orchestrator schedules trigger nightly"
    )]
    Schedules(triggers::ScheduleArgs),
    /// List webhook triggers (deliveries go to POST /hooks/NAME).
    #[command(after_help = "Example:\n  orchestrator triggers -o json")]
    Triggers,
    /// Print the newest run and step events; with -f, follow them live.
    #[command(
        after_help = "Without --after, the newest --limit events come first. -f keeps \
        following (resuming after a dropped connection) until interrupted.\n\n\
        Example:\n  orchestrator events -f\n  orchestrator events --type run.failed --limit 50\n  \
        orchestrator events --workflow deploy --after 1200 -o json"
    )]
    Events(events::EventsArgs),
    /// Show the server: its id, whether it is ready (and why not), its lease and retention.
    #[command(
        after_help = "Exits 0 when the server is ready, 1 when it is not (its store does not \
        answer or refuses writes; the reason is printed), 2 when it cannot be reached.\n\n\
        Example:\n  orchestrator status\n  orchestrator status -o json"
    )]
    Status,
    /// List task queues: tasks waiting and in flight, and the workers polling each.
    #[command(after_help = "Example:\n  orchestrator queues\n  orchestrator queues -o json")]
    Queues,
    /// List the workers seen polling in the last five minutes.
    #[command(after_help = "Example:\n  orchestrator workers")]
    Workers,
    /// Run a worker: take tasks of the queues and run a command for each.
    #[command(
        after_help = "The command runs by `sh -c` with the task's payload as JSON on its \
        standard input (and ORCHESTRATOR_TASK_ID, _RUN_ID, _STEP, _QUEUE, _ATTEMPT in its \
        environment). Exit 0 completes the task with standard output (JSON, or else text); \
        any other exit fails it with the end of standard error. The command is killed when \
        the run is canceled or the task's timeout_ms passes. SIGTERM lets the tasks in \
        flight finish, then exits 0.\n\n\
        Example:\n  orchestrator worker --queue thumbnails --exec ./make-thumbnail.sh --concurrency 4\n  \
        orchestrator worker --queue build --queue test --exec 'python3 ci.py'"
    )]
    Worker(worker::WorkerArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  orchestrator completions bash > /etc/bash_completion.d/orchestrator\n  \
        orchestrator completions zsh > \"${fpath[1]}/_orchestrator\"\n  \
        orchestrator completions fish > ~/.config/fish/completions/orchestrator.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// What a subcommand works with.
pub(crate) struct Ctx {
    pub api: Api,
    pub format: Format,
    pub style: output::Style,
}

/// Runs a client subcommand and returns the process exit code; errors are printed on
/// standard error. `definition` is the binary's whole command line, for completions.
pub fn main(
    options: &ClientOptions,
    command: ClientCommand,
    definition: impl FnOnce() -> clap::Command,
) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::from)
        .and_then(|rt| rt.block_on(dispatch(options, command, definition)));
    match result {
        Ok(code) => code,
        Err(ClientError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orchestrator: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(
    options: &ClientOptions,
    command: ClientCommand,
    definition: impl FnOnce() -> clap::Command,
) -> Result<ExitCode, ClientError> {
    let done = Ok(ExitCode::SUCCESS);
    if let ClientCommand::Completions { shell } = command {
        return completions::print(shell, definition())
            .map_err(ClientError::from)
            .and(done);
    }
    let ctx = Ctx {
        api: Api::new(&options.server, options.token.clone())?,
        format: options.output,
        style: output::Style::detect(),
    };
    match command {
        ClientCommand::Apply { files } => workflows::apply(&ctx, &files).await,
        ClientCommand::Run(args) => runs::start(&ctx, args).await,
        ClientCommand::Runs(args) => runs::list(&ctx, args).await.and(done),
        ClientCommand::Get { run } => runs::get(&ctx, &run).await.and(done),
        ClientCommand::Logs { run, follow } => logs::show(&ctx, &run, follow).await.and(done),
        ClientCommand::Approve(args) => decide::approve(&ctx, args).await.and(done),
        ClientCommand::Reject(args) => decide::reject(&ctx, args).await.and(done),
        ClientCommand::Cancel { run } => decide::act(&ctx, &run, "cancel").await.and(done),
        ClientCommand::Retry(args) => curate::retry(&ctx, args).await,
        ClientCommand::Delete { run } => curate::delete(&ctx, &run).await.and(done),
        ClientCommand::Archive { workflow } => curate::archive(&ctx, &workflow).await.and(done),
        ClientCommand::Workflows(args) => curate::workflows(&ctx, args).await.and(done),
        ClientCommand::Event(args) => decide::event(&ctx, args).await.and(done),
        ClientCommand::Schedules(args) => triggers::schedules(&ctx, args).await.and(done),
        ClientCommand::Triggers => triggers::triggers(&ctx).await.and(done),
        ClientCommand::Events(args) => events::show(&ctx, args).await.and(done),
        ClientCommand::Status => server::status(&ctx).await,
        ClientCommand::Queues => queues::queues(&ctx).await.and(done),
        ClientCommand::Workers => queues::workers(&ctx).await.and(done),
        ClientCommand::Worker(args) => worker::run(&ctx, args).await,
        ClientCommand::Completions { .. } => done,
    }
}
