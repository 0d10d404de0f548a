"""URLs (included from config/urls.py)."""

urlpatterns = []
