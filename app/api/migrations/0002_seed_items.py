"""Seeds the rows that /api/db reads, so every environment answers the same query."""

from django.db import migrations

SEED_COUNT = 100


def seed(apps, schema_editor):
    Item = apps.get_model("api", "Item")
    if Item.objects.exists():
        return
    Item.objects.bulk_create(
        Item(name=f"Item {number:03d}", price_cents=100 + (number * 37) % 9900) for number in range(1, SEED_COUNT + 1)
    )


def unseed(apps, schema_editor):
    apps.get_model("api", "Item").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("api", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
