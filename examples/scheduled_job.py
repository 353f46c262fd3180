"""The guide's "Scheduling" section: functions that run on a schedule once the app is deployed.

    ferry deploy examples/scheduled_job.py     # schedules start; they survive server restarts
    ferry app show scheduled-jobs              # each scheduled function with its next run
    ferry run examples/scheduled_job.py        # ephemeral: runs main() once, schedules nothing

`Period` restarts on each deploy; `Cron` keeps its wall-clock slots across redeploys.
"""

import ferry as modal

app = modal.App("scheduled-jobs")


# Every 30 minutes, counted from the deploy
@app.function(schedule=modal.Period(minutes=30))
def frequent_job():
    print("Running every 30 minutes")


# Every Monday at 8am, Paris time
@app.function(schedule=modal.Cron("0 8 * * 1", timezone="Europe/Paris"))
def monday_report():
    print("Weekly report")
    return "report sent"


@app.local_entrypoint()
def main():
    # Scheduled functions can also be triggered manually
    print(monday_report.remote())
