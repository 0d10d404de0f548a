import os

from django.core.management.base import BaseCommand

from annotation.management.demo import DEMO_USERS, demo_load
from annotation.models import Judgment, Prompt


class Command(BaseCommand):
    help = "Create the demo project, its users and example judgments (safe to run again)."

    def handle(self, *args, **options):
        password = os.environ.get("DEMO_PASSWORD", "loop-demo-2026")
        project = demo_load(password=password)
        prompts = Prompt.objects.filter(project=project).count()
        judgments = Judgment.objects.filter(project=project).count()
        self.stdout.write(f"Project '{project.slug}': {prompts} prompts, {judgments} judgments.")
        self.stdout.write(f"Demo logins (password for all: {password}):")
        for name, role in DEMO_USERS.items():
            self.stdout.write(f"  {name:<11} {role}")
